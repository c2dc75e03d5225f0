/* Schedulers against the reference vectors (wan/schedulers.io.safetensors:
   every <solver>_<steps>_<shift> set in the file, the whole loop with the
   toy model v = tanh(x*a + b*t/1000) evaluated on the host), then Euler and
   guidance against host arithmetic, runs that start part-way, reset, and
   every MR_EINVAL path. */
#include "testutil.h"

#include <math.h>
#include <string.h>

#define TOL_SIGMA 1e-6 /* max abs */
#define TOL_FINAL 1e-5 /* relative L2 */

/* An f64 entry of the vector file as doubles (borrowed). */
static const double *entry(const mr_weights *w, const char *name, int64_t *n) {
  int i = mr_weights_find(w, name);
  mr_weight_info info;
  if (i < 0 || mr_weights_get(w, i, &info) != MR_OK || info.dtype != MR_F64) {
    fprintf(stderr, "vector file: no f64 entry '%s'\n", name);
    mr_test_failures++;
    *n = 0;
    return NULL;
  }
  *n = (int64_t)(info.nbytes / sizeof(double));
  return info.data;
}

static mr_tensor *upload(mr_ctx *ctx, const float *x, int ndim, const int64_t *shape) {
  mr_tensor *t = NULL;
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, ndim, shape, MR_F32, x, &t));
  return t;
}

/* The toy model on the host, in double, rounded to f32. */
static void toy_model(const float *x, const double *a, const double *b, int64_t t, int64_t n, float *v) {
  for (int64_t k = 0; k < n; k++) v[k] = (float)tanh((double)x[k] * a[k] + b[k] * (double)t / 1000.0);
}

/* Runs the whole schedule from x0 and returns the final sample (malloc'd). */
static float *run_loop(mr_ctx *ctx, mr_sampler *s, const float *x0, const double *a, const double *b, int ndim,
                       const int64_t *shape, int64_t n) {
  int steps = mr_sampler_steps(s);
  int64_t *ts = malloc((size_t)steps * sizeof *ts);
  float *x = malloc((size_t)n * sizeof *x), *v = malloc((size_t)n * sizeof *v);
  mr_sampler_timesteps(s, ts);
  memcpy(x, x0, (size_t)n * sizeof *x);
  for (int i = 0; i < steps; i++) {
    toy_model(x, a, b, ts[i], n, v);
    mr_tensor *tx = upload(ctx, x, ndim, shape), *tv = upload(ctx, v, ndim, shape), *next = NULL;
    CHECK_OK(ctx, mr_sampler_step(s, tv, ts[i], tx, &next));
    if (next) CHECK_OK(ctx, mr_tensor_read(next, MR_F32, x, (size_t)n));
    mr_tensor_free(tx);
    mr_tensor_free(tv);
    mr_tensor_free(next);
  }
  free(ts);
  free(v);
  return x;
}

/* "<solver>_<steps>_<shift>" -> its parts; false if the name has another form. */
static bool parse_key(const char *key, char *solver, size_t cap, int *steps, double *shift) {
  const char *u2 = strrchr(key, '_');
  if (!u2 || u2 == key) return false;
  const char *u1 = u2 - 1;
  while (u1 > key && *u1 != '_') u1--;
  if (*u1 != '_' || (size_t)(u1 - key) >= cap) return false;
  memcpy(solver, key, (size_t)(u1 - key));
  solver[u1 - key] = '\0';
  char *end;
  *steps = (int)strtol(u1 + 1, &end, 10);
  if (end != u2) return false;
  *shift = strtod(u2 + 1, &end);
  return *end == '\0';
}

static void test_vectors(mr_ctx *ctx, const char *dir) {
  char path[1024];
  snprintf(path, sizeof path, "%s/wan/schedulers.io.safetensors", dir);
  mr_weights *w = NULL;
  CHECK_OK(ctx, mr_weights_open(ctx, path, &w));
  if (!w) return;
  int64_t n, na, nb;
  const double *x_init = entry(w, "x_init", &n), *a = entry(w, "a", &na), *b = entry(w, "b", &nb);
  mr_weight_info xi;
  mr_weights_get(w, mr_weights_find(w, "x_init"), &xi);
  float *x0 = malloc((size_t)n * sizeof *x0);
  for (int64_t k = 0; k < n; k++) x0[k] = (float)x_init[k];
  int64_t shape[MR_MAX_DIMS];
  for (int d = 0; d < xi.ndim; d++) shape[d] = xi.shape[d];
  CHECK(na == n && nb == n && xi.ndim <= MR_MAX_DIMS);
  int sets = 0;
  for (int e = 0; e < mr_weights_count(w); e++) {
    mr_weight_info info;
    mr_weights_get(w, e, &info);
    const char *dot = strrchr(info.name, '.');
    if (!dot || strcmp(dot, ".timesteps") != 0) continue;
    char key[256], solver[64], name[300];
    snprintf(key, sizeof key, "%.*s", (int)(dot - info.name), info.name);
    int steps;
    double shift;
    mr_sampler_opts o = mr_sampler_opts_default();
    if (!parse_key(key, solver, sizeof solver, &steps, &shift) || !mr_sampler_kind_parse(solver, &o.kind)) {
      fprintf(stderr, "vector set '%s': unknown solver or key form\n", key);
      mr_test_failures++;
      continue;
    }
    sets++;
    o.steps = steps;
    o.shift = shift;
    mr_sampler *s = NULL;
    CHECK_OK(ctx, mr_sampler_new(ctx, &o, &s));
    if (!s) continue;

    int64_t nt, ns, nf;
    snprintf(name, sizeof name, "%s.timesteps", key);
    const double *want_t = entry(w, name, &nt);
    snprintf(name, sizeof name, "%s.sigmas", key);
    const double *want_s = entry(w, name, &ns);
    snprintf(name, sizeof name, "%s.final", key);
    const double *want_f = entry(w, name, &nf);
    if (!want_t || !want_s || !want_f || nt != steps || ns != steps + 1 || nf != n) {
      fprintf(stderr, "vector set '%s': sizes do not match %d steps\n", key, steps);
      mr_test_failures++;
      mr_sampler_free(s);
      continue;
    }
    int64_t *ts = malloc((size_t)steps * sizeof *ts);
    double *sg = malloc((size_t)(steps + 1) * sizeof *sg), sig_err = 0;
    mr_sampler_timesteps(s, ts);
    mr_sampler_sigmas(s, sg);
    int t_bad = 0;
    for (int i = 0; i < steps; i++) t_bad += (double)ts[i] != want_t[i];
    for (int i = 0; i <= steps; i++) sig_err = fmax(sig_err, fabs(sg[i] - want_s[i]));
    CHECK(t_bad == 0);
    CHECK(sig_err <= TOL_SIGMA);

    float *got = run_loop(ctx, s, x0, a, b, xi.ndim, shape, n);
    float *want = malloc((size_t)n * sizeof *want);
    for (int64_t k = 0; k < n; k++) want[k] = (float)want_f[k];
    double err = mr_rel_l2(got, want, (size_t)n);
    printf("%-16s timesteps %s  sigmas max abs %.3g  final rel L2 %.3g\n", key, t_bad ? "DIFFER" : "identical",
           sig_err, err);
    CHECK(err <= TOL_FINAL);

    /* reset: the same run again gives the same bits */
    mr_sampler_reset(s);
    CHECK(mr_sampler_next_index(s) == -1);
    float *again = run_loop(ctx, s, x0, a, b, xi.ndim, shape, n);
    CHECK(memcmp(got, again, (size_t)n * sizeof *got) == 0);
    free(again);
    free(got);
    free(want);
    free(ts);
    free(sg);
    mr_sampler_free(s);
  }
  CHECK(sets >= 6);
  free(x0);
  mr_weights_free(w);
}

/* Euler on the DPM++ sigmas and guidance, against host arithmetic. */
static void test_euler_guidance(mr_ctx *ctx) {
  enum { N = 333 };
  float x[N], v[N], vu[N], got[N];
  mr_rng rng = {77};
  mr_rng_fill(&rng, x, N, -2, 2);
  mr_rng_fill(&rng, v, N, -2, 2);
  mr_rng_fill(&rng, vu, N, -2, 2);
  int64_t shape[3] = {3, 111, 1};
  mr_sampler_opts o = {.kind = MR_SAMPLER_EULER, .steps = 7, .shift = 3.0};
  mr_sampler *eu = NULL, *dp = NULL;
  CHECK_OK(ctx, mr_sampler_new(ctx, &o, &eu));
  o.kind = MR_SAMPLER_DPMPP;
  CHECK_OK(ctx, mr_sampler_new(ctx, &o, &dp));
  int64_t te[7], td[7];
  double se[8], sd[8];
  mr_sampler_timesteps(eu, te);
  mr_sampler_timesteps(dp, td);
  mr_sampler_sigmas(eu, se);
  mr_sampler_sigmas(dp, sd);
  CHECK(memcmp(te, td, sizeof te) == 0 && memcmp(se, sd, sizeof se) == 0);
  CHECK(te[0] == 1000 && se[0] == 1.0 && se[7] == 0.0);
  mr_tensor *tx = upload(ctx, x, 3, shape), *tv = upload(ctx, v, 3, shape), *out = NULL;
  for (int i = 0; i < 7; i++) {
    CHECK_OK(ctx, mr_sampler_step(eu, tv, te[i], tx, &out));
    if (!out) break;
    mr_tensor_free(tx);
    tx = out;
    for (int k = 0; k < N; k++) x[k] = (float)((double)x[k] + (se[i + 1] - se[i]) * v[k]);
  }
  CHECK_OK(ctx, mr_tensor_read(tx, MR_F32, got, N));
  CHECK(mr_rel_l2(got, x, N) <= 1e-6);

  mr_tensor *tu = upload(ctx, vu, 3, shape), *g = NULL;
  CHECK_OK(ctx, mr_guidance(tv, tu, 5.0f, &g));
  CHECK_OK(ctx, mr_tensor_read(g, MR_F32, got, N));
  float want[N];
  for (int k = 0; k < N; k++) want[k] = (float)(vu[k] + 5.0 * ((double)v[k] - vu[k]));
  CHECK(mr_rel_l2(got, want, N) <= 1e-6);
  mr_tensor_free(g);
  mr_tensor_free(tu);
  mr_tensor_free(tx);
  mr_tensor_free(tv);
  mr_sampler_free(eu);
  mr_sampler_free(dp);
}

/* The official examples of docs/wan-architecture.md §5.2. */
static void test_tables(mr_ctx *ctx) {
  mr_sampler_opts o = {.kind = MR_SAMPLER_UNIPC, .steps = 50, .shift = 5.0};
  mr_sampler *s = NULL;
  int64_t t[50];
  CHECK_OK(ctx, mr_sampler_new(ctx, &o, &s));
  mr_sampler_timesteps(s, t);
  static const int64_t head[6] = {999, 995, 991, 987, 982, 978}, tail[4] = {302, 241, 172, 92};
  CHECK(memcmp(t, head, sizeof head) == 0 && memcmp(t + 46, tail, sizeof tail) == 0);
  mr_sampler_free(s);
  o.steps = 40;
  o.shift = 3.0;
  CHECK_OK(ctx, mr_sampler_new(ctx, &o, &s));
  mr_sampler_timesteps(s, t);
  CHECK(t[0] == 999 && t[1] == 991 && t[2] == 982 && t[38] == 136 && t[39] == 71);
  mr_sampler_free(s);
  o.shift = 12.0;
  CHECK_OK(ctx, mr_sampler_new(ctx, &o, &s));
  mr_sampler_timesteps(s, t);
  CHECK(t[0] == 999 && t[1] == 997 && t[2] == 995 && t[38] == 386 && t[39] == 235);
  mr_sampler_free(s);

  mr_sampler_kind k;
  CHECK(mr_sampler_kind_parse("dpm++", &k) && k == MR_SAMPLER_DPMPP);
  CHECK(strcmp(mr_sampler_kind_name(MR_SAMPLER_EULER), "euler") == 0);
  CHECK(!mr_sampler_kind_parse("ddim", &k));
}

/* A run may start part-way; a started run takes its timesteps in order; every
   rejected call leaves the sampler as it was. */
static void test_run_rules(mr_ctx *ctx) {
  int64_t shape[2] = {4, 5}, other[2] = {5, 4};
  float x[20], v[20];
  mr_rng rng = {9};
  mr_rng_fill(&rng, x, 20, -1, 1);
  mr_rng_fill(&rng, v, 20, -1, 1);
  mr_tensor *tx = upload(ctx, x, 2, shape), *tv = upload(ctx, v, 2, shape), *ty = upload(ctx, v, 2, other);
  mr_tensor *xb = NULL, *out = (mr_tensor *)1;
  CHECK_OK(ctx, mr_tensor_cast(tx, MR_BF16, &xb));
  for (int kind = 0; kind < 3; kind++) {
    mr_sampler_opts o = {.kind = (mr_sampler_kind)kind, .steps = 6, .shift = 2.0};
    mr_sampler *s = NULL;
    CHECK_OK(ctx, mr_sampler_new(ctx, &o, &s));
    int64_t t[6];
    mr_sampler_timesteps(s, t);
    out = (mr_tensor *)1;
    CHECK(mr_sampler_step(s, tv, 12345, tx, &out) == MR_EINVAL && out == NULL);
    CHECK(strstr(mr_ctx_last_error(ctx), "not in the schedule") != NULL);
    CHECK(mr_sampler_step(s, ty, t[0], tx, &out) == MR_EINVAL && out == NULL);
    CHECK(strstr(mr_ctx_last_error(ctx), "model_output has shape 5x4") != NULL);
    CHECK(mr_sampler_next_index(s) == -1);
    /* start at the third entry (image-to-image); the sample's dtype is kept */
    CHECK_OK(ctx, mr_sampler_step(s, tv, t[2], xb, &out));
    CHECK(out && mr_tensor_dtype(out) == MR_BF16);
    mr_tensor_free(out);
    CHECK(mr_sampler_next_index(s) == 3);
    out = (mr_tensor *)1;
    CHECK(mr_sampler_step(s, tv, t[2], tx, &out) == MR_EINVAL && out == NULL);
    CHECK(strstr(mr_ctx_last_error(ctx), "out of order") != NULL);
    CHECK(mr_sampler_step(s, ty, t[3], ty, &out) == MR_EINVAL && out == NULL);
    CHECK(strstr(mr_ctx_last_error(ctx), "the run started with 4x5") != NULL);
    CHECK(mr_sampler_next_index(s) == 3);
    for (int i = 3; i < 6; i++) {
      CHECK_OK(ctx, mr_sampler_step(s, tv, t[i], tx, &out));
      mr_tensor_free(out);
    }
    out = (mr_tensor *)1;
    CHECK(mr_sampler_step(s, tv, t[5], tx, &out) == MR_EINVAL && out == NULL);
    CHECK(strstr(mr_ctx_last_error(ctx), "finished") != NULL);
    mr_sampler_reset(s);
    CHECK_OK(ctx, mr_sampler_step(s, ty, t[0], ty, &out)); /* a new run may change shape */
    mr_tensor_free(out);
    mr_sampler_free(s);
  }
  mr_sampler_opts bad = {.kind = MR_SAMPLER_UNIPC, .steps = 0, .shift = 1.0};
  mr_sampler *s = (mr_sampler *)1;
  CHECK(mr_sampler_new(ctx, &bad, &s) == MR_EINVAL && s == NULL);
  bad.steps = 10;
  bad.shift = NAN;
  CHECK(mr_sampler_new(ctx, &bad, &s) == MR_EINVAL && s == NULL);
  bad.shift = -1;
  CHECK(mr_sampler_new(ctx, &bad, &s) == MR_EINVAL && s == NULL);
  bad.kind = (mr_sampler_kind)7;
  bad.shift = 1;
  CHECK(mr_sampler_new(ctx, &bad, &s) == MR_EINVAL && s == NULL);
  bad.kind = MR_SAMPLER_UNIPC;
  bad.steps = 100000;
  bad.shift = 1000;
  CHECK(mr_sampler_new(ctx, &bad, &s) == MR_EINVAL && s == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "repeated f32 sigmas") != NULL);
  mr_sampler_free(NULL);
  mr_tensor_free(xb);
  mr_tensor_free(tx);
  mr_tensor_free(tv);
  mr_tensor_free(ty);
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "tests/conformance/data";
  mr_ctx *ctx = mr_test_ctx();
  test_tables(ctx);
  test_vectors(ctx, dir);
  test_euler_guidance(ctx);
  test_run_rules(ctx);
  CHECK(mr_ctx_validation_messages(ctx) == 0);
  mr_ctx_free(ctx);
  return mr_test_finish("test_sampler");
}
