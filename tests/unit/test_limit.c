/* test_limit.c - the memory limiter: exact under threads, tokens, concurrency, sliding window */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <uv.h>

#include "conf/conf.h"
#include "limit/limit.h"
#include "limit/limit_int.h"

/* A second well after the epoch, and 250 ms into it. */
#define S0 1700000000ull
#define T0 (S0 * 1000 + 250)

static _Atomic uint64_t fake_ms;

static uint64_t fake_clock(void)
{
	return atomic_load(&fake_ms);
}

static void at(uint64_t ms)
{
	atomic_store(&fake_ms, ms);
}

static struct conf memory_conf(void)
{
	struct conf c;
	memset(&c, 0, sizeof(c));
	c.ratelimit_backend = CONF_BACKEND_MEMORY;
	c.routing.total_timeout_ms = 600000;
	return c;
}

static struct conf_account account(const char *id, uint64_t rpm, uint64_t tpm, uint64_t maxc)
{
	return (struct conf_account){
		.id = (char *)id,
		.limits = {.requests_per_minute = rpm, .tokens_per_minute = tpm,
			   .max_concurrent = maxc},
	};
}

/* What the done callback saw. */
struct answer {
	int calls;
	enum limit_verdict v;
	struct limit_view view;
};

static void on_done(struct limit_ticket *t, enum limit_verdict v, const struct limit_view *view,
		    void *ud)
{
	struct answer *a = ud;
	(void)t;
	a->calls++;
	a->v = v;
	a->view = *view;
}

struct fixture {
	uv_loop_t loop;
	struct conf conf;
	struct limiter *l;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	uv_loop_init(&f->loop);
	f->conf = memory_conf();
	f->l = limiter_new(&f->loop, &f->conf);
	limit__now_ms = fake_clock;
	at(T0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	limiter_free(f->l);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	free(f);
	limit__now_ms = limit__wall_ms;
	limit_shutdown();
	return 0;
}

/* Admits synchronously (memory backend) and returns the verdict. */
static enum limit_verdict admit(struct fixture *f, const struct conf_account *a, uint64_t est,
				struct limit_ticket *t, struct answer *ans)
{
	memset(ans, 0, sizeof(*ans));
	limit_admit(f->l, &f->conf, a, est, t, on_done, ans);
	assert_int_equal(ans->calls, 1);
	assert_false(t->pending);
	return ans->v;
}

/* --- exactness under threads ------------------------------------------------------------- */

#define THREADS 8

struct hammer {
	uv_barrier_t *start;
	const struct conf_account *a;
	int tries;
	bool finish;                  /* finish each admitted request at once */
	atomic_int *admitted;
	struct limit_ticket *held;    /* not finished: kept for the main thread */
	int nheld;
};

static void hammer_thread(void *arg)
{
	struct hammer *h = arg;
	struct conf c = memory_conf();
	uv_loop_t loop;
	struct limiter *l;

	uv_loop_init(&loop);
	l = limiter_new(&loop, &c);
	uv_barrier_wait(h->start);
	for (int i = 0; i < h->tries; i++) {
		struct limit_ticket t;
		struct answer ans = {0};
		limit_admit(l, &c, h->a, 1, &t, on_done, &ans);
		if (ans.calls != 1)
			abort();
		if (ans.v != LIMIT_OK)
			continue;
		atomic_fetch_add(h->admitted, 1);
		if (h->finish)
			limit_finish(l, &c, &t, 1);
		else
			h->held[h->nheld++] = t;
	}
	limiter_free(l);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
}

static int run_hammer(const struct conf_account *a, int tries, bool finish, struct hammer *hs)
{
	uv_thread_t th[THREADS];
	uv_barrier_t start;
	atomic_int admitted = 0;

	uv_barrier_init(&start, THREADS);
	for (int i = 0; i < THREADS; i++) {
		hs[i] = (struct hammer){.start = &start, .a = a, .tries = tries, .finish = finish,
					.admitted = &admitted,
					.held = calloc((size_t)tries, sizeof(struct limit_ticket))};
		assert_int_equal(uv_thread_create(&th[i], hammer_thread, &hs[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		uv_thread_join(&th[i]);
	uv_barrier_destroy(&start);
	return atomic_load(&admitted);
}

static void test_exact_requests_under_threads(void **state)
{
	struct fixture *f = *state;
	struct conf_account a = account("acme", 100, 0, 0);
	struct hammer hs[THREADS];
	struct limit_view v;

	assert_int_equal(run_hammer(&a, 100, true, hs), 100);
	for (int i = 0; i < THREADS; i++)
		free(hs[i].held);
	limit_peek(&f->conf, &a, &v);
	assert_int_equal(v.requests_limit, 100);
	assert_int_equal(v.requests_remaining, 0);
	/* a second later, still nothing: the window slides, it does not reset */
	at(T0 + 1000);
	assert_int_equal(run_hammer(&a, 10, true, hs), 0);
	for (int i = 0; i < THREADS; i++)
		free(hs[i].held);
}

static void test_exact_concurrency_under_threads(void **state)
{
	struct fixture *f = *state;
	struct conf_account a = account("acme", 0, 0, 10);
	struct hammer hs[THREADS];
	struct limit_ticket t;
	struct answer ans;

	assert_int_equal(run_hammer(&a, 50, false, hs), 10);
	assert_int_equal(admit(f, &a, 0, &t, &ans), LIMIT_CONCURRENCY);
	assert_int_equal(ans.view.retry_after_ms, 1000);
	for (int i = 0; i < THREADS; i++) {
		for (int j = 0; j < hs[i].nheld; j++)
			limit_finish(f->l, &f->conf, &hs[i].held[j], 0);
		free(hs[i].held);
	}
	for (int i = 0; i < 10; i++)
		assert_int_equal(admit(f, &a, 0, &t, &ans), LIMIT_OK);
	assert_int_equal(admit(f, &a, 0, &t, &ans), LIMIT_CONCURRENCY);
}

/* --- tokens ------------------------------------------------------------------------------ */

static void test_tokens_reserve_and_settle(void **state)
{
	struct fixture *f = *state;
	struct conf_account a = account("acme", 0, 1000, 0);
	struct limit_ticket t1, t2, t3, t4;
	struct answer ans;

	assert_int_equal(admit(f, &a, 600, &t1, &ans), LIMIT_OK);
	assert_true(t1.admitted && t1.local);
	assert_int_equal(t1.reserved_tokens, 600);
	assert_int_equal(t1.second, S0);
	assert_int_equal(ans.view.tokens_limit, 1000);
	assert_int_equal(ans.view.tokens_remaining, 400);
	assert_int_equal(ans.view.tokens_reset_ms, 60000 - 250);
	assert_int_equal(ans.view.requests_limit, 0);

	/* the reservation holds the budget: a second one does not fit */
	at(T0 + 5000);
	assert_int_equal(admit(f, &a, 600, &t2, &ans), LIMIT_TOKENS);
	assert_false(t2.admitted);
	assert_int_equal(ans.view.retry_after_ms, 60000 - 5250);
	assert_int_equal(ans.view.tokens_remaining, 400);

	/* settled down to 100 used: 900 left, the same request now fits */
	limit_finish(f->l, &f->conf, &t1, 100);
	assert_false(t1.admitted);
	assert_int_equal(admit(f, &a, 600, &t2, &ans), LIMIT_OK);
	assert_int_equal(ans.view.tokens_remaining, 300);

	/* settled up: t2 used 900, so 100 + 900 = 1000 counted */
	limit_finish(f->l, &f->conf, &t2, 900);
	assert_int_equal(admit(f, &a, 1, &t3, &ans), LIMIT_TOKENS);
	assert_int_equal(ans.view.tokens_remaining, 0);
	/* one token fits once the first second (100) has left */
	assert_int_equal(ans.view.retry_after_ms, 60000 - 5250);
	at((S0 + 60) * 1000);
	assert_int_equal(admit(f, &a, 1, &t3, &ans), LIMIT_OK);
	assert_int_equal(ans.view.tokens_remaining, 1000 - 900 - 1);

	/* a second finish does nothing */
	limit_finish(f->l, &f->conf, &t1, 5000);
	assert_int_equal(admit(f, &a, 99, &t4, &ans), LIMIT_OK);
	assert_int_equal(ans.view.tokens_remaining, 0);
}

static void test_estimate_above_budget(void **state)
{
	struct fixture *f = *state;
	struct conf_account a = account("acme", 0, 1000, 0);
	struct limit_ticket t1, t2;
	struct answer ans;

	/* alone it exceeds the budget; with nothing counted it runs, else it never could */
	assert_int_equal(admit(f, &a, 5000, &t1, &ans), LIMIT_OK);
	assert_int_equal(ans.view.tokens_remaining, 0);
	at(T0 + 2000);
	assert_int_equal(admit(f, &a, 1, &t2, &ans), LIMIT_TOKENS);
	/* and when something is counted it waits for all of it to leave */
	limit_finish(f->l, &f->conf, &t1, 10);
	assert_int_equal(admit(f, &a, 5000, &t2, &ans), LIMIT_TOKENS);
	assert_int_equal(ans.view.retry_after_ms, 60000 - 2250);
	at((S0 + 60) * 1000);
	assert_int_equal(admit(f, &a, 5000, &t2, &ans), LIMIT_OK);
}

static void test_settle_after_the_bucket_left(void **state)
{
	struct fixture *f = *state;
	struct conf_account a = account("acme", 0, 1000, 0);
	struct limit_ticket t1, t2, t3;
	struct answer ans;

	assert_int_equal(admit(f, &a, 100, &t1, &ans), LIMIT_OK);
	assert_int_equal(admit(f, &a, 100, &t2, &ans), LIMIT_OK);
	at(T0 + 61000);
	/* used more than reserved: the difference counts now */
	limit_finish(f->l, &f->conf, &t1, 300);
	/* used less: nothing to take back, the reservation is gone already */
	limit_finish(f->l, &f->conf, &t2, 0);
	assert_int_equal(admit(f, &a, 0, &t3, &ans), LIMIT_OK);
	assert_int_equal(ans.view.tokens_remaining, 800);
	assert_int_equal(ans.view.tokens_reset_ms, 60000 - 250);
}

/* --- concurrency, requests, window ------------------------------------------------------- */

static void test_concurrency(void **state)
{
	struct fixture *f = *state;
	struct conf_account a = account("acme", 0, 0, 2);
	struct limit_ticket t1, t2, t3;
	struct answer ans;

	assert_int_equal(admit(f, &a, 0, &t1, &ans), LIMIT_OK);
	assert_int_equal(admit(f, &a, 0, &t2, &ans), LIMIT_OK);
	assert_int_equal(admit(f, &a, 0, &t3, &ans), LIMIT_CONCURRENCY);
	assert_int_equal(ans.view.retry_after_ms, 1000);
	/* a refused ticket has nothing to finish */
	limit_finish(f->l, &f->conf, &t3, 0);
	assert_int_equal(admit(f, &a, 0, &t3, &ans), LIMIT_CONCURRENCY);
	limit_finish(f->l, &f->conf, &t1, 0);
	assert_int_equal(admit(f, &a, 0, &t3, &ans), LIMIT_OK);
	assert_int_equal(admit(f, &a, 0, &t1, &ans), LIMIT_CONCURRENCY);
	limit_finish(f->l, &f->conf, &t2, 0);
	limit_finish(f->l, &f->conf, &t3, 0);
}

static void test_window_slides(void **state)
{
	struct fixture *f = *state;
	struct conf_account a = account("acme", 3, 0, 0);
	struct limit_ticket t;
	struct answer ans;

	assert_int_equal(admit(f, &a, 0, &t, &ans), LIMIT_OK);       /* second S0 */
	limit_finish(f->l, &f->conf, &t, 0);
	assert_int_equal(ans.view.requests_remaining, 2);
	assert_int_equal(ans.view.requests_reset_ms, 60000 - 250);
	at(T0 + 10000);                                               /* second S0 + 10 */
	assert_int_equal(admit(f, &a, 0, &t, &ans), LIMIT_OK);
	assert_int_equal(admit(f, &a, 0, &t, &ans), LIMIT_OK);
	assert_int_equal(ans.view.requests_remaining, 0);
	assert_int_equal(ans.view.requests_reset_ms, 50000 - 250);
	assert_int_equal(admit(f, &a, 0, &t, &ans), LIMIT_REQUESTS);
	assert_int_equal(ans.view.retry_after_ms, 50000 - 250);

	/* the last millisecond of S0's minute: still counted */
	at((S0 + 60) * 1000 - 1);
	assert_int_equal(admit(f, &a, 0, &t, &ans), LIMIT_REQUESTS);
	assert_int_equal(ans.view.retry_after_ms, 1);
	/* S0 has left: one fits, then the two of S0 + 10 hold until S0 + 70 */
	at((S0 + 60) * 1000);
	assert_int_equal(admit(f, &a, 0, &t, &ans), LIMIT_OK);
	assert_int_equal(admit(f, &a, 0, &t, &ans), LIMIT_REQUESTS);
	assert_int_equal(ans.view.retry_after_ms, 10000);
	assert_int_equal(ans.view.requests_reset_ms, 10000);
}

/* T32's boundary: a burst just before a minute ends and one just after do not add up, as they
 * would with fixed windows. */
static void test_no_double_burst_at_a_boundary(void **state)
{
	struct fixture *f = *state;
	struct conf_account a = account("acme", 5, 0, 0);
	struct limit_ticket t;
	struct answer ans;
	int ok = 0;

	at(S0 * 1000 + 59999);
	for (int i = 0; i < 10; i++)
		ok += admit(f, &a, 0, &t, &ans) == LIMIT_OK;
	assert_int_equal(ok, 5);
	at(S0 * 1000 + 60001);
	for (int i = 0; i < 10; i++)
		ok += admit(f, &a, 0, &t, &ans) == LIMIT_OK;
	assert_int_equal(ok, 5);
	at((S0 + 59 + 60) * 1000);
	for (int i = 0; i < 10; i++)
		ok += admit(f, &a, 0, &t, &ans) == LIMIT_OK;
	assert_int_equal(ok, 10);
}

static void test_retry_covers_every_refusing_limit(void **state)
{
	struct fixture *f = *state;
	struct conf_account a = account("acme", 2, 100, 3);
	struct limit_ticket t1, t2, t3;
	struct answer ans;

	assert_int_equal(admit(f, &a, 0, &t1, &ans), LIMIT_OK);        /* S0 */
	at(T0 + 30000);
	assert_int_equal(admit(f, &a, 100, &t2, &ans), LIMIT_OK);      /* S0 + 30 */
	at(T0 + 40000);
	/* requests refuse until S0 leaves (20 s), tokens until S0 + 30 leaves (50 s): the verdict
	 * names the first, the wait is the longest */
	assert_int_equal(admit(f, &a, 10, &t3, &ans), LIMIT_REQUESTS);
	assert_int_equal(ans.view.retry_after_ms, 50000 - 250);
	assert_int_equal(ans.view.requests_remaining, 0);
	assert_int_equal(ans.view.tokens_remaining, 0);
	assert_int_equal(ans.view.requests_reset_ms, 20000 - 250);
	assert_int_equal(ans.view.tokens_reset_ms, 50000 - 250);
	at((S0 + 60) * 1000);
	assert_int_equal(admit(f, &a, 10, &t3, &ans), LIMIT_TOKENS);
	assert_int_equal(ans.view.retry_after_ms, 30000);
	limit_finish(f->l, &f->conf, &t1, 0);
	limit_finish(f->l, &f->conf, &t2, 100);
}

static void test_accounts_are_independent_and_survive_reloads(void **state)
{
	struct fixture *f = *state;
	struct conf_account a = account("a", 1, 0, 0), b = account("b", 1, 0, 0);
	struct conf_account a2 = account("a", 2, 0, 0);   /* "a" in a reloaded snapshot */
	struct limit_ticket t;
	struct answer ans;

	assert_int_equal(admit(f, &a, 0, &t, &ans), LIMIT_OK);
	assert_int_equal(admit(f, &a, 0, &t, &ans), LIMIT_REQUESTS);
	assert_int_equal(admit(f, &b, 0, &t, &ans), LIMIT_OK);
	assert_int_equal(admit(f, &b, 0, &t, &ans), LIMIT_REQUESTS);
	assert_int_equal(admit(f, &a2, 0, &t, &ans), LIMIT_OK);
	assert_int_equal(ans.view.requests_remaining, 0);
	assert_int_equal(admit(f, &a2, 0, &t, &ans), LIMIT_REQUESTS);
}

static void test_unlimited_and_no_account(void **state)
{
	struct fixture *f = *state;
	struct conf_account a = account("free", 0, 0, 0);
	struct limit_ticket t;
	struct answer ans;

	for (int i = 0; i < 1000; i++)
		assert_int_equal(admit(f, &a, 1000000, &t, &ans), LIMIT_OK);
	assert_false(t.admitted);
	assert_int_equal(ans.view.requests_limit, 0);
	assert_int_equal(ans.view.tokens_limit, 0);
	assert_int_equal(admit(f, NULL, 5, &t, &ans), LIMIT_OK);
	assert_false(t.admitted);
	limit_finish(f->l, &f->conf, &t, 5);
	assert_null(limit__acct_find("free"));
}

static void test_peek(void **state)
{
	struct fixture *f = *state;
	struct conf_account a = account("acme", 10, 1000, 0);
	struct limit_ticket t;
	struct answer ans;
	struct limit_view v;

	limit_peek(&f->conf, &a, &v);
	assert_int_equal(v.requests_limit, 10);
	assert_int_equal(v.requests_remaining, 10);
	assert_int_equal(v.requests_reset_ms, 0);
	assert_int_equal(v.tokens_remaining, 1000);
	assert_int_equal(v.tokens_reset_ms, 0);
	assert_int_equal(admit(f, &a, 300, &t, &ans), LIMIT_OK);
	at(T0 + 1000);
	limit_peek(&f->conf, &a, &v);
	assert_int_equal(v.requests_remaining, 9);
	assert_int_equal(v.tokens_remaining, 700);
	assert_int_equal(v.requests_reset_ms, 59000 - 250);
	assert_int_equal(v.tokens_reset_ms, 59000 - 250);
	limit_peek(&f->conf, NULL, &v);
	assert_int_equal(v.requests_limit, 0);
}

static void test_many_accounts_grow_the_registry(void **state)
{
	struct fixture *f = *state;
	char ids[300][16];
	struct conf_account as[300];
	struct limit_ticket t;
	struct answer ans;

	for (int i = 0; i < 300; i++) {
		snprintf(ids[i], sizeof(ids[i]), "acct-%d", i);
		as[i] = account(ids[i], 1, 0, 0);
		assert_int_equal(admit(f, &as[i], 0, &t, &ans), LIMIT_OK);
	}
	for (int i = 0; i < 300; i++) {
		assert_int_equal(admit(f, &as[i], 0, &t, &ans), LIMIT_REQUESTS);
		assert_non_null(limit__acct_find(ids[i]));
		assert_string_equal(limit__acct_find(ids[i])->id, ids[i]);
	}
	assert_string_equal(limit__acct_find("acct-7")->rkey_window, "meridian:rl:{acct-7}:w");
	assert_string_equal(limit__acct_find("acct-7")->rkey_conc, "meridian:rl:{acct-7}:c");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_exact_requests_under_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exact_concurrency_under_threads, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_tokens_reserve_and_settle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_estimate_above_budget, setup, teardown),
		cmocka_unit_test_setup_teardown(test_settle_after_the_bucket_left, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrency, setup, teardown),
		cmocka_unit_test_setup_teardown(test_window_slides, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_double_burst_at_a_boundary, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_retry_covers_every_refusing_limit, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_accounts_are_independent_and_survive_reloads,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_unlimited_and_no_account, setup, teardown),
		cmocka_unit_test_setup_teardown(test_peek, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_accounts_grow_the_registry, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
