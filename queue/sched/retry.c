/*
 * retry.c - the retry policy, in one place: when a message that still has
 * pending recipients is tried again, when it expires, and when its sender
 * is warned. Pure: the configuration (retry, max-queue-lifetime,
 * delay-warning), the envelope and the clock in, a time or a yes/no out;
 * the jitter comes from the caller's random source. The scheduler
 * (sched.c) applies the answers at the end of each delivery round.
 *
 * The schedule: retry steps (conf "retry"), the last one repeating, each
 * with +-10% jitter so that messages deferred together do not come back
 * together; a destination marked down pushes the next attempt past its
 * down time, spread over a tenth of the wait so the probe after it is not
 * a stampede. A message expires (its pending recipients bounce with 4.4.7)
 * once it is max-queue-lifetime old; a delay warning goes out once, when it
 * is delay-warning old and not yet expired.
 */
#include <stddef.h>
#include <stdint.h>

#include "tern/conf.h"
#include "tern/envelope.h"
#include "sched_int.h"

unsigned
sched_retry_delay(const unsigned *steps, size_t nsteps, unsigned attempt,
    double rnd)
{
	double base, d;
	size_t i;

	if (steps == NULL || nsteps == 0)
		return 300;
	if (attempt == 0)
		attempt = 1;
	i = attempt <= nsteps ? attempt - 1 : nsteps - 1;
	base = steps[i];
	if (!(rnd >= 0.0 && rnd < 1.0))         /* also catches NaN */
		rnd = 0.5;
	d = base + base * 0.1 * (2.0 * rnd - 1.0);
	if (d < 1.0)
		d = base > 0 ? 1.0 : 0.0;
	if (d > 4294967295.0)
		d = 4294967295.0;
	return (unsigned)(d + 0.5 > 4294967295.0 ? d : d + 0.5);
}

int64_t
sched_retry_next(const struct conf *c, unsigned attempts, int64_t not_before,
    int64_t now, double (*rnd)(void *arg), void *arg)
{
	int64_t next = now + sched_retry_delay(c->retry, c->nretry, attempts,
	    rnd(arg));

	if (not_before > next) {
		int64_t spread = (not_before - now) / 10 + 1;
		next = not_before + (int64_t)(rnd(arg) * (double)spread);
	}
	return next;
}

int
sched_retry_expired(const struct conf *c, const struct envelope *env,
    size_t npend, int64_t now)
{
	return npend > 0 && c->max_queue_lifetime > 0 &&
	    now >= env->arrival + (int64_t)c->max_queue_lifetime;
}

int
sched_retry_warn_due(const struct conf *c, const struct envelope *env,
    size_t npend, int64_t now)
{
	return npend > 0 && c->delay_warning > 0 &&
	    !(env->flags & ENV_F_WARNED) &&
	    now >= env->arrival + (int64_t)c->delay_warning;
}

int64_t
sched_retry_until(const struct conf *c, const struct envelope *env)
{
	return c->max_queue_lifetime > 0 ?
	    env->arrival + (int64_t)c->max_queue_lifetime : 0;
}
