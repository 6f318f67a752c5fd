/*
 * pksm test-guest workload: runs as PID 1's child inside the busybox
 * initramfs of the test guest (scripts/build-guest.sh) and gives the
 * host-side deduplicator something to find and something to break.
 *
 * It fills a locked buffer with pages of three known kinds:
 *   dup     content(seed) for one of a few seeds: many identical pages;
 *   zero    all-zero pages (written, so the guest really owns them);
 *   unique  content drawn from the page index: never equal to another page.
 * It keeps a checksum of every page it wrote and re-verifies all of them
 * periodically, so a merge that loses or corrupts data shows up in the
 * guest's own serial log. After a while it writes into some dup and zero
 * pages (which by then have been merged: those writes must land as COW
 * breaks), reads them back, and on the next round restores them (they
 * become duplicates again and can re-merge).
 *
 * A memory-bandwidth loop (memset + memcpy over its own buffer) measures the
 * guest's memory throughput while merging goes on, for the benchmark.
 *
 * Everything is configured from the kernel command line (/proc/cmdline):
 *   pksm.mode=dedup|bw|both  what to run (default dedup)
 *   pksm.mib=N               dedup buffer size in MiB (default 64)
 *   pksm.dup=P pksm.zero=P   percent of dup and zero pages (default 50, 25;
 *                            the rest is unique)
 *   pksm.seeds=K             distinct dup contents (default 4)
 *   pksm.verify=S            seconds between verification rounds (default 3)
 *   pksm.cow-after=S         first COW round S seconds after READY (default
 *                            20; 0 = never)
 *   pksm.cow-every=S         later COW rounds every S seconds (default 10;
 *                            0 = only one round)
 *   pksm.cow-frac=F          one page in F dup/zero pages is written per
 *                            round (default 16)
 *   pksm.bw-mib=N            bandwidth buffer in MiB (default 16)
 *   pksm.seconds=S           stop S seconds after READY (default 0: never)
 *
 * Every line it prints starts with "PKSM-WORKLOAD " so tests can grep the
 * serial log:
 *   PKSM-WORKLOAD layout pages=N dup=D seeds=K zero=Z unique=U mib=M
 *   PKSM-WORKLOAD READY
 *   PKSM-WORKLOAD verify round=R errors=E pages=N ms=T
 *   PKSM-WORKLOAD VERIFY FAILED page=I kind=K seed=S expected=H got=H round=R
 *   PKSM-WORKLOAD cow round=R written=W restored=X errors=E
 *   PKSM-WORKLOAD bw t=SECONDS MBps=X MB=TOTAL   (MB: moved since READY)
 *   PKSM-WORKLOAD DONE verify-rounds=R total-errors=E
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE_SIZE 4096u
#define WORDS_PER_PAGE (PAGE_SIZE / sizeof(uint64_t))
#define MAX_REPORTED_FAILURES 10

enum page_kind { KIND_DUP = 0, KIND_ZERO = 1, KIND_UNIQUE = 2 };
static const char *const kind_names[] = {"dup", "zero", "unique"};

struct config {
	char mode[16];
	unsigned long mib, dup_pct, zero_pct, seeds, verify_s, cow_after_s,
		cow_every_s, cow_frac, bw_mib, seconds;
};

/* Per-page bookkeeping: what the page must contain right now. */
struct page_record {
	uint64_t expected;   /* checksum of the content the page must hold */
	uint32_t seed;       /* dup: content seed */
	uint8_t kind;        /* enum page_kind, as laid out */
	uint8_t modified;    /* a COW round wrote into it and has not restored it */
};

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t mix2(uint64_t a, uint64_t b)
{
	uint64_t s = a * 0x9e3779b97f4a7c15ull ^ (b + 0x632be59bd9b4e019ull);
	return splitmix64(&s);
}

/* Deterministic page content; never all-zero. Equal (tag, index) give equal
 * pages, so two guests booted alike hold the same pages. */
static void fill_content(uint64_t *page, uint64_t tag, uint64_t index)
{
	uint64_t state = mix2(tag, index);
	for (unsigned i = 0; i < WORDS_PER_PAGE; i++)
		page[i] = splitmix64(&state);
	page[0] |= 1;
}

/* A fast 64-bit checksum of a whole page (every word contributes). */
static uint64_t page_checksum(const uint64_t *page)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (unsigned i = 0; i < WORDS_PER_PAGE; i += 4) {
		h = (h ^ page[i]) * 0x100000001b3ull;
		h = (h ^ page[i + 1]) * 0x100000001b3ull;
		h = (h ^ page[i + 2]) * 0x100000001b3ull;
		h = (h ^ page[i + 3]) * 0x100000001b3ull;
		h ^= h >> 29;
	}
	return h;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
	if (s <= 0)
		return;
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	nanosleep(&ts, NULL);
}

static void parse_cmdline(struct config *c)
{
	strcpy(c->mode, "dedup");
	c->mib = 64;
	c->dup_pct = 50;
	c->zero_pct = 25;
	c->seeds = 4;
	c->verify_s = 3;
	c->cow_after_s = 20;
	c->cow_every_s = 10;
	c->cow_frac = 16;
	c->bw_mib = 16;
	c->seconds = 0;

	char buf[4096] = {0};
	FILE *f = fopen("/proc/cmdline", "r");
	if (!f) {
		perror("PKSM-WORKLOAD /proc/cmdline");
		return;
	}
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;

	static const struct {
		const char *key;
		size_t off;
	} keys[] = {
		{"pksm.mib=", offsetof(struct config, mib)},
		{"pksm.dup=", offsetof(struct config, dup_pct)},
		{"pksm.zero=", offsetof(struct config, zero_pct)},
		{"pksm.seeds=", offsetof(struct config, seeds)},
		{"pksm.verify=", offsetof(struct config, verify_s)},
		{"pksm.cow-after=", offsetof(struct config, cow_after_s)},
		{"pksm.cow-every=", offsetof(struct config, cow_every_s)},
		{"pksm.cow-frac=", offsetof(struct config, cow_frac)},
		{"pksm.bw-mib=", offsetof(struct config, bw_mib)},
		{"pksm.seconds=", offsetof(struct config, seconds)},
	};
	for (char *tok = strtok(buf, " \t\n"); tok; tok = strtok(NULL, " \t\n")) {
		if (!strncmp(tok, "pksm.mode=", 10)) {
			snprintf(c->mode, sizeof(c->mode), "%s", tok + 10);
			continue;
		}
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
			size_t len = strlen(keys[k].key);
			if (!strncmp(tok, keys[k].key, len)) {
				char *end;
				unsigned long v = strtoul(tok + len, &end, 10);
				if (*end || end == tok + len)
					printf("PKSM-WORKLOAD bad parameter %s (ignored)\n", tok);
				else
					*(unsigned long *)((char *)c + keys[k].off) = v;
			}
		}
	}
	if (c->seeds == 0)
		c->seeds = 1;
	if (c->dup_pct + c->zero_pct > 100) {
		printf("PKSM-WORKLOAD bad proportions dup=%lu zero=%lu (using 50/25)\n",
		       c->dup_pct, c->zero_pct);
		c->dup_pct = 50;
		c->zero_pct = 25;
	}
	if (c->cow_frac == 0)
		c->cow_frac = 16;
	if (c->verify_s == 0)
		c->verify_s = 1;
}

/* Locked, populated anonymous memory the guest kernel will not reclaim. */
static uint8_t *alloc_locked(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (p == MAP_FAILED) {
		perror("PKSM-WORKLOAD mmap");
		exit(2);
	}
	if (mlock(p, bytes))
		perror("PKSM-WORKLOAD mlock (continuing; pages stay touched)");
	madvise(p, bytes, MADV_NOHUGEPAGE);
	return p;
}

struct workload {
	struct config cfg;
	uint8_t *mem;
	size_t pages;
	struct page_record *rec;
	uint64_t *seed_pages;          /* content(seed) for each seed */
	unsigned long verify_rounds, total_errors, cow_rounds;
};

static uint64_t *page_at(struct workload *w, size_t i)
{
	return (uint64_t *)(w->mem + i * PAGE_SIZE);
}

/* Writes the page's as-laid-out content and records its checksum. */
static void write_original(struct workload *w, size_t i)
{
	struct page_record *r = &w->rec[i];
	uint64_t *p = page_at(w, i);
	switch (r->kind) {
	case KIND_DUP:
		memcpy(p, w->seed_pages + (size_t)r->seed * WORDS_PER_PAGE, PAGE_SIZE);
		break;
	case KIND_ZERO:
		memset(p, 0, PAGE_SIZE);
		break;
	default:
		fill_content(p, 0x756e69717565ull /* "unique" */, i);
		break;
	}
	r->expected = page_checksum(p);
	r->modified = 0;
}

static void lay_out(struct workload *w)
{
	const struct config *c = &w->cfg;
	w->pages = c->mib * 1024 * 1024 / PAGE_SIZE;
	w->mem = alloc_locked(w->pages * PAGE_SIZE);
	w->rec = calloc(w->pages, sizeof(*w->rec));
	w->seed_pages = (uint64_t *)alloc_locked(c->seeds * PAGE_SIZE);
	if (!w->rec) {
		printf("PKSM-WORKLOAD out of memory\n");
		exit(2);
	}
	for (unsigned long s = 0; s < c->seeds; s++)
		fill_content(w->seed_pages + s * WORDS_PER_PAGE, 0x64757000ull + s, 0);

	size_t counts[3] = {0, 0, 0};
	for (size_t i = 0; i < w->pages; i++) {
		uint64_t h = mix2(0x6c61796f7574ull, i);
		unsigned pct = (unsigned)(h % 100);
		struct page_record *r = &w->rec[i];
		if (pct < c->dup_pct) {
			r->kind = KIND_DUP;
			r->seed = (uint32_t)((h >> 32) % c->seeds);
		} else if (pct < c->dup_pct + c->zero_pct) {
			r->kind = KIND_ZERO;
		} else {
			r->kind = KIND_UNIQUE;
		}
		counts[r->kind]++;
		write_original(w, i);
	}
	printf("PKSM-WORKLOAD layout pages=%zu dup=%zu seeds=%lu zero=%zu unique=%zu mib=%lu\n",
	       w->pages, counts[KIND_DUP], c->seeds, counts[KIND_ZERO],
	       counts[KIND_UNIQUE], c->mib);
}

/* Re-reads every page and compares it with its recorded checksum. */
static void verify_all(struct workload *w)
{
	double t0 = now_s();
	unsigned long errors = 0;
	w->verify_rounds++;
	for (size_t i = 0; i < w->pages; i++) {
		const struct page_record *r = &w->rec[i];
		uint64_t got = page_checksum(page_at(w, i));
		if (got == r->expected)
			continue;
		if (++errors <= MAX_REPORTED_FAILURES)
			printf("PKSM-WORKLOAD VERIFY FAILED page=%zu kind=%s seed=%u modified=%u "
			       "expected=%016" PRIx64 " got=%016" PRIx64 " round=%lu\n",
			       i, kind_names[r->kind], r->seed, r->modified, r->expected, got,
			       w->verify_rounds);
	}
	w->total_errors += errors;
	printf("PKSM-WORKLOAD verify round=%lu errors=%lu pages=%zu ms=%.0f\n",
	       w->verify_rounds, errors, w->pages, (now_s() - t0) * 1000);
}

/*
 * One COW round: restore the pages the previous round modified (they are
 * duplicates again), then write a word into one in cow_frac of the dup and
 * zero pages, picked differently each round. Those pages have most likely
 * been merged by now: each write is a COW break on the host and must land.
 * Each written page is read back at once.
 */
static void cow_round(struct workload *w)
{
	unsigned long written = 0, restored = 0, errors = 0;
	unsigned long round = ++w->cow_rounds;
	size_t frac = w->cfg.cow_frac;

	for (size_t i = 0; i < w->pages; i++) {
		if (w->rec[i].modified) {
			write_original(w, i);
			restored++;
		}
	}
	for (size_t i = 0; i < w->pages; i++) {
		struct page_record *r = &w->rec[i];
		if (r->kind == KIND_UNIQUE || (i + round) % frac != 0)
			continue;
		uint64_t *p = page_at(w, i);
		size_t word = (round * 7 + i) % WORDS_PER_PAGE;
		uint64_t value = mix2(0x636f77ull + round, i) | 1;
		p[word] ^= value;
		uint64_t expect_word = p[word];
		r->expected = page_checksum(p);
		r->modified = 1;
		written++;
		/* Read the write back at once: it must have landed. */
		if (p[word] != expect_word || page_checksum(p) != r->expected) {
			if (++errors <= MAX_REPORTED_FAILURES)
				printf("PKSM-WORKLOAD VERIFY FAILED page=%zu kind=%s cow-readback round=%lu\n",
				       i, kind_names[r->kind], round);
		}
	}
	w->total_errors += errors;
	printf("PKSM-WORKLOAD cow round=%lu written=%lu restored=%lu errors=%lu\n",
	       round, written, restored, errors);
}

/* memset + memcpy over a buffer for about `seconds`; returns bytes moved. */
static double bandwidth_burst(uint8_t *buf, size_t bytes, double seconds, double *elapsed)
{
	static unsigned pattern;
	size_t half = bytes / 2;
	double moved = 0, t0 = now_s(), t;
	do {
		memset(buf, (int)(++pattern & 0xff), half);
		memcpy(buf + half, buf, half);
		moved += 3.0 * (double)half; /* memset writes half; memcpy reads and writes half */
		t = now_s();
	} while (t - t0 < seconds);
	*elapsed = t - t0;
	return moved;
}

int main(void)
{
	struct workload w;
	memset(&w, 0, sizeof(w));
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_cmdline(&w.cfg);
	const struct config *c = &w.cfg;

	int do_dedup = strcmp(c->mode, "bw") != 0;
	int do_bw = !strcmp(c->mode, "bw") || !strcmp(c->mode, "both");
	if (strcmp(c->mode, "dedup") && !do_bw) {
		printf("PKSM-WORKLOAD bad mode %s (dedup|bw|both)\n", c->mode);
		return 2;
	}
	printf("PKSM-WORKLOAD start mode=%s mib=%lu dup=%lu%% zero=%lu%% seeds=%lu verify=%lus "
	       "cow-after=%lus cow-every=%lus cow-frac=%lu bw-mib=%lu seconds=%lu\n",
	       c->mode, c->mib, c->dup_pct, c->zero_pct, c->seeds, c->verify_s,
	       c->cow_after_s, c->cow_every_s, c->cow_frac, c->bw_mib, c->seconds);

	if (do_dedup) {
		lay_out(&w);
		verify_all(&w);
	}
	uint8_t *bw_buf = NULL;
	size_t bw_bytes = c->bw_mib * 1024 * 1024;
	if (do_bw)
		bw_buf = alloc_locked(bw_bytes);

	double t_ready = now_s();
	printf("PKSM-WORKLOAD READY\n");

	double next_verify = t_ready + (double)c->verify_s;
	double next_cow = c->cow_after_s ? t_ready + (double)c->cow_after_s : -1;
	double next_bw_report = t_ready + 1.0;
	double bw_bytes_acc = 0, bw_time_acc = 0, bw_total = 0;
	for (;;) {
		double t = now_s();
		if (c->seconds && t - t_ready >= (double)c->seconds)
			break;
		if (do_dedup && next_cow > 0 && t >= next_cow) {
			cow_round(&w);
			next_cow = c->cow_every_s ? t + (double)c->cow_every_s : -1;
		}
		if (do_dedup && t >= next_verify) {
			verify_all(&w);
			next_verify = now_s() + (double)c->verify_s;
		}
		if (do_bw) {
			double el;
			double moved = bandwidth_burst(bw_buf, bw_bytes, 0.2, &el);
			bw_bytes_acc += moved;
			bw_total += moved;
			bw_time_acc += el;
			if (now_s() >= next_bw_report) {
				printf("PKSM-WORKLOAD bw t=%.1f MBps=%.1f MB=%.0f\n", now_s() - t_ready,
				       bw_bytes_acc / bw_time_acc / 1e6, bw_total / 1e6);
				bw_bytes_acc = bw_time_acc = 0;
				next_bw_report = now_s() + 1.0;
			}
		} else {
			sleep_s(0.1);
		}
	}
	if (do_dedup)
		verify_all(&w);
	printf("PKSM-WORKLOAD DONE verify-rounds=%lu total-errors=%lu\n", w.verify_rounds,
	       w.total_errors);
	return w.total_errors ? 1 : 0;
}
