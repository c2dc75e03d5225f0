/* Flow-matching samplers as Wan samples with them: UniPC
   (FlowUniPCMultistepScheduler: bh2, order 2, predictor + corrector),
   DPM++ (FlowDPMSolverMultistepScheduler: dpmsolver++, order 2 midpoint)
   and Euler, plus classifier-free guidance. The sigma tables and the scalar
   coefficients are host double math; every tensor update is one
   mr_op_lincomb of at most four tensors. docs/wan-architecture.md §5 states
   the reference algorithms this file follows step by step. */
#include "ops/op_internal.h"
#include "tensor/tensor_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct mr_sampler {
  mr_ctx *ctx;
  mr_sampler_kind kind;
  int steps;
  double shift;
  int64_t *timesteps; /* steps entries */
  float *sigmas;      /* steps + 1 entries, the last 0 (f32, as the reference keeps them) */

  /* the current run */
  int next;             /* table index of the next step; -1 before the run starts */
  int lower_order_nums; /* steps done so far, capped at the solver order (2) */
  int this_order;       /* UniPC: order of the last predictor, the next corrector's order */
  mr_tensor *m_last;    /* x0 prediction of the last step (M[-1]), f32 */
  mr_tensor *m_prev;    /* the one before (M[-2]), f32 */
  mr_tensor *last_sample; /* UniPC: the last step's sample after its corrector, f32 */
  int ndim;
  int64_t shape[MR_MAX_DIMS];
};

/* ---------------------------------------------------------------- tables */

mr_sampler_opts mr_sampler_opts_default(void) {
  mr_sampler_opts o = {.kind = MR_SAMPLER_UNIPC, .steps = 50, .shift = 5.0};
  return o;
}

const char *mr_sampler_kind_name(mr_sampler_kind kind) {
  switch (kind) {
  case MR_SAMPLER_UNIPC: return "unipc";
  case MR_SAMPLER_DPMPP: return "dpmpp";
  case MR_SAMPLER_EULER: return "euler";
  }
  return "";
}

bool mr_sampler_kind_parse(const char *name, mr_sampler_kind *out) {
  if (!name) return false;
  if (strcmp(name, "unipc") == 0) *out = MR_SAMPLER_UNIPC;
  else if (strcmp(name, "dpmpp") == 0 || strcmp(name, "dpm++") == 0) *out = MR_SAMPLER_DPMPP;
  else if (strcmp(name, "euler") == 0) *out = MR_SAMPLER_EULER;
  else return false;
  return true;
}

/* The rounding steps below are forced through volatile so that no compiler
   fuses a*b + c into one fma: numpy rounds the product and the sum
   separately, and the truncated timesteps sit close enough to integers for
   that last bit to matter. */

/* numpy.linspace(a, b, n + 1)[i] for i < n: a + i * ((b - a) / n). */
static double linspace_at(double a, double b, int n, int i) {
  volatile double step = (b - a) / n;
  volatile double prod = (double)i * step;
  return prod + a;
}

/* Wan's shift, s·σ / (1 + (s − 1)·σ), in the reference's order of operations. */
static double shift_sigma(double s, double sigma) {
  volatile double num = s * sigma;
  volatile double scaled = (s - 1.0) * sigma;
  volatile double den = 1.0 + scaled;
  return num / den;
}

static void build_tables(mr_sampler *s) {
  /* UniPC: σ_max is the float32 training sigma 1 − 1/1000 (0.99900001...),
     σ_min 0. DPM++/Euler: get_sampling_sigmas, linspace(1, 0). */
  double top = s->kind == MR_SAMPLER_UNIPC ? (double)(float)0.999 : 1.0;
  for (int i = 0; i < s->steps; i++) {
    double sg = shift_sigma(s->shift, linspace_at(top, 0.0, s->steps, i));
    volatile double t = sg * 1000.0;
    s->timesteps[i] = (int64_t)t; /* truncation toward zero, as .to(torch.int64) */
    s->sigmas[i] = (float)sg;
  }
  s->sigmas[s->steps] = 0.0f;
}

/* Every update needs σ_t < σ_s (h > 0): extreme shifts with many steps can
   round neighbouring sigmas to one float. */
static bool tables_ok(const mr_sampler *s) {
  for (int i = 0; i < s->steps; i++)
    if (!(s->sigmas[i + 1] < s->sigmas[i])) return false;
  return true;
}

mr_status mr_sampler_new(mr_ctx *ctx, const mr_sampler_opts *opts, mr_sampler **out) {
  *out = NULL;
  mr_sampler_opts o = opts ? *opts : mr_sampler_opts_default();
  if (mr_sampler_kind_name(o.kind)[0] == '\0')
    return mr_error(ctx, MR_EINVAL, "sampler: unknown kind %d", (int)o.kind);
  if (o.steps < 1 || o.steps > 100000)
    return mr_error(ctx, MR_EINVAL, "sampler: steps must be 1 to 100000, not %d", o.steps);
  if (!(o.shift > 0.0) || !isfinite(o.shift))
    return mr_error(ctx, MR_EINVAL, "sampler: shift must be a positive finite number, not %g", o.shift);
  mr_sampler *s = calloc(1, sizeof *s);
  if (s) {
    s->timesteps = malloc((size_t)o.steps * sizeof *s->timesteps);
    s->sigmas = malloc((size_t)(o.steps + 1) * sizeof *s->sigmas);
  }
  if (!s || !s->timesteps || !s->sigmas) {
    if (s) {
      free(s->timesteps);
      free(s->sigmas);
    }
    free(s);
    return mr_error(ctx, MR_ENOMEM, "sampler: out of host memory");
  }
  s->ctx = ctx;
  s->kind = o.kind;
  s->steps = o.steps;
  s->shift = o.shift;
  s->next = -1;
  build_tables(s);
  if (!tables_ok(s)) {
    mr_sampler_free(s);
    return mr_error(ctx, MR_EINVAL, "sampler: %d steps with shift %g give repeated f32 sigmas; use fewer steps or a "
                    "milder shift", o.steps, o.shift);
  }
  *out = s;
  return MR_OK;
}

void mr_sampler_reset(mr_sampler *s) {
  mr_tensor_free(s->m_last);
  mr_tensor_free(s->m_prev);
  mr_tensor_free(s->last_sample);
  s->m_last = s->m_prev = s->last_sample = NULL;
  s->next = -1;
  s->lower_order_nums = 0;
  s->this_order = 0;
  s->ndim = 0;
}

void mr_sampler_free(mr_sampler *s) {
  if (!s) return;
  mr_sampler_reset(s);
  free(s->timesteps);
  free(s->sigmas);
  free(s);
}

mr_sampler_kind mr_sampler_get_kind(const mr_sampler *s) { return s->kind; }
double mr_sampler_shift(const mr_sampler *s) { return s->shift; }
int mr_sampler_steps(const mr_sampler *s) { return s->steps; }
int mr_sampler_next_index(const mr_sampler *s) { return s->next; }

void mr_sampler_timesteps(const mr_sampler *s, int64_t *out) {
  memcpy(out, s->timesteps, (size_t)s->steps * sizeof *out);
}

void mr_sampler_sigmas(const mr_sampler *s, double *out) {
  for (int i = 0; i <= s->steps; i++) out[i] = s->sigmas[i];
}

/* ---------------------------------------------------------------- scalar math */

/* λ(σ) = ln α − ln σ with α = 1 − σ: +∞ at σ = 0 (the clean end), −∞ at σ = 1 (pure noise). */
static double lambda_of(double sigma) {
  if (sigma <= 0.0) return INFINITY;
  if (sigma >= 1.0) return -INFINITY;
  return log(1.0 - sigma) - log(sigma);
}

/* The pieces of one exponential-integrator update from σ_s to σ_t (σ_t < σ_s). */
typedef struct update {
  double ratio;   /* σ_t / σ_s */
  double alpha_t; /* 1 − σ_t */
  double h;       /* λ_t − λ_s; +∞ when σ_t = 0 or σ_s = 1 */
  double em1;     /* expm1(−h) = h_phi_1 = B_h (bh2); −1 when h = +∞ */
} update;

static update update_terms(double sigma_s, double sigma_t) {
  update u = {.ratio = sigma_t / sigma_s, .alpha_t = 1.0 - sigma_t};
  double lt = lambda_of(sigma_t), ls = lambda_of(sigma_s);
  if (lt == INFINITY || ls == -INFINITY) { /* e^(−h) = 0 exactly */
    u.h = INFINITY;
    u.em1 = -1.0;
  } else {
    u.h = lt - ls;
    u.em1 = expm1(-u.h);
  }
  return u;
}

/* 1/r for r = (λ(σ_k) − λ_s0) / h, the step ratio of a multistep
   difference: 0 when λ(σ_k) = −∞ (σ_k = 1, where the reference's
   difference term vanishes: (m_k − m0)/r with r infinite). */
static double inv_ratio(double sigma_k, double lambda_s0, double h) {
  double lk = lambda_of(sigma_k);
  if (isinf(lk)) return 0.0;
  return h / (lk - lambda_s0);
}

/* ---------------------------------------------------------------- tensor helpers */

/* A lincomb into f32 (history) or the sample's dtype (results). Terms with
   a NULL tensor are skipped. */
static mr_status comb(int n, const mr_tensor *const *xs, const double *c, mr_dtype dtype, mr_tensor **out) {
  const mr_tensor *ts[MR_LINCOMB_MAX];
  float cf[MR_LINCOMB_MAX];
  int m = 0;
  for (int k = 0; k < n; k++) {
    if (!xs[k]) continue;
    ts[m] = xs[k];
    cf[m++] = (float)c[k];
  }
  return mr_op_lincomb_dtype(m, ts, cf, dtype, out);
}

static bool same_shape(int ndim, const int64_t *shape, const mr_tensor *t) {
  if (t->ndim != ndim) return false;
  for (int d = 0; d < ndim; d++)
    if (t->shape[d] != shape[d]) return false;
  return true;
}

/* Which table entry this step is, or an error leaving the sampler as it was. */
static mr_status find_index(mr_sampler *s, int64_t timestep, int *idx) {
  if (s->next < 0) {
    for (int i = 0; i < s->steps; i++)
      if (s->timesteps[i] == timestep) {
        *idx = i;
        return MR_OK;
      }
    return mr_error(s->ctx, MR_EINVAL, "%s: timestep %lld is not in the schedule (%d steps, %lld .. %lld)",
                    mr_sampler_kind_name(s->kind), (long long)timestep, s->steps, (long long)s->timesteps[0],
                    (long long)s->timesteps[s->steps - 1]);
  }
  if (s->next >= s->steps)
    return mr_error(s->ctx, MR_EINVAL, "%s: the run is finished (all %d steps done); reset to start another",
                    mr_sampler_kind_name(s->kind), s->steps);
  if (s->timesteps[s->next] != timestep) {
    bool known = false;
    for (int i = 0; i < s->steps && !known; i++) known = s->timesteps[i] == timestep;
    return mr_error(s->ctx, MR_EINVAL, "%s: timestep %lld %s; step %d of the run expects %lld (reset to start over)",
                    mr_sampler_kind_name(s->kind), (long long)timestep,
                    known ? "is out of order" : "is not in the schedule", s->next, (long long)s->timesteps[s->next]);
  }
  *idx = s->next;
  return MR_OK;
}

static mr_status check_tensors(mr_sampler *s, const mr_tensor *v, const mr_tensor *x) {
  const char *name = mr_sampler_kind_name(s->kind);
  if (!v || !x) return mr_error(s->ctx, MR_EINVAL, "%s: model_output and sample are required", name);
  if (v->ctx != s->ctx || x->ctx != s->ctx)
    return mr_error(s->ctx, MR_EINVAL, "%s: tensors belong to another context than the sampler", name);
  char a[64], b[64];
  if (!same_shape(x->ndim, x->shape, v))
    return mr_error(s->ctx, MR_EINVAL, "%s: model_output has shape %s, sample %s", name,
                    mr_shape_str(v->ndim, v->shape, a, sizeof a), mr_shape_str(x->ndim, x->shape, b, sizeof b));
  if (s->next >= 0 && !same_shape(s->ndim, s->shape, x))
    return mr_error(s->ctx, MR_EINVAL, "%s: sample has shape %s, the run started with %s (reset to change shape)", name,
                    mr_shape_str(x->ndim, x->shape, a, sizeof a), mr_shape_str(s->ndim, s->shape, b, sizeof b));
  return MR_OK;
}

/* ---------------------------------------------------------------- solvers */

/* The new state of one step, committed only when the whole step succeeded. */
typedef struct step_result {
  mr_tensor *x_next;      /* returned to the caller */
  mr_tensor *m;           /* this step's x0 prediction: the new M[-1] */
  mr_tensor *last_sample; /* UniPC: the (corrected) sample */
  int this_order;
} step_result;

/* Euler: x_next = x + (σ_{i+1} − σ_i)·v. */
static mr_status euler_step(mr_sampler *s, int i, const mr_tensor *v, const mr_tensor *x, step_result *r) {
  const mr_tensor *xs[2] = {x, v};
  double c[2] = {1.0, (double)s->sigmas[i + 1] - (double)s->sigmas[i]};
  return comb(2, xs, c, x->dtype, &r->x_next);
}

/* DPM++ (dpmsolver++, midpoint), x0 = x − σ_i·v kept as M[-1]:
   first order  x_t = (σ_t/σ_s)·x − α_t(e^−h − 1)·m0
   second order x_t = (σ_t/σ_s0)·x − α_t(e^−h − 1)·m0 − ½α_t(e^−h − 1)·(m0 − m1)/r0,
   r0 = (λ_s0 − λ_s1)/h. First order on the first step of a run and on the
   last step (lower_order_final with final sigma 0). */
static mr_status dpmpp_step(mr_sampler *s, int i, const mr_tensor *v, const mr_tensor *x, step_result *r) {
  double sig = s->sigmas[i], sig_t = s->sigmas[i + 1];
  const mr_tensor *xm[2] = {x, v};
  double cm[2] = {1.0, -sig};
  mr_status st = comb(2, xm, cm, MR_F32, &r->m);
  if (st != MR_OK) return st;
  bool last = i == s->steps - 1;
  int order = (s->lower_order_nums < 1 || last) ? 1 : 2;
  update u = update_terms(sig, sig_t);
  double a = u.alpha_t * u.em1; /* α_t(e^−h − 1) */
  if (order == 1) {
    const mr_tensor *xs[2] = {x, r->m};
    double c[2] = {u.ratio, -a};
    return comb(2, xs, c, x->dtype, &r->x_next);
  }
  double inv_r0 = inv_ratio(s->sigmas[i - 1], lambda_of(sig), u.h); /* 1/r0 = h / (λ_s0 − λ_s1) */
  inv_r0 = -inv_r0; /* inv_ratio gives h / (λ_s1 − λ_s0) */
  const mr_tensor *xs[3] = {x, r->m, s->m_last};
  double c[3] = {u.ratio, -a - 0.5 * a * inv_r0, 0.5 * a * inv_r0};
  return comb(3, xs, c, x->dtype, &r->x_next);
}

/* UniPC bh2 (predict_x0), docs/wan-architecture.md §5.3. With m_t = x − σ_i·v:
   corrector (UniC, when the run has a last sample), from σ_{i−1} to σ_i with
   the previous predictor's order p:
     x_c = (σ_t/σ_s0)·x_last − α_t h_phi_1·m0 − α_t B_h·(ρ0·D1 + ρ1·(m_t − m0)),
     D1 = (M[-2] − m0)/r, ρ from [[1,1],[r,1]]·ρ = b (p = 2) or ρ1 = ½ (p = 1);
   predictor (UniP) from σ_i to σ_{i+1} with order min(2, N − i, steps so far + 1):
     x_next = (σ_t/σ_s0)·x_c − α_t h_phi_1·m_t − α_t B_h·½·(m_prev − m_t)/r (order 2). */
static mr_status unipc_step(mr_sampler *s, int i, const mr_tensor *v, const mr_tensor *x, step_result *r) {
  double sig = s->sigmas[i];
  const mr_tensor *xm[2] = {x, v};
  double cm[2] = {1.0, -sig};
  mr_status st = comb(2, xm, cm, MR_F32, &r->m);
  if (st != MR_OK) return st;

  /* corrector: sample ← x_c; without one the sample is kept as given (an f32 copy) */
  if (s->last_sample) {
    int p = s->this_order;
    double sig_s0 = s->sigmas[i - 1];
    update u = update_terms(sig_s0, sig);
    double rho0 = 0.0, rho1 = 0.5, inv_r = 0.0;
    if (p == 2) {
      double hh = -u.h, bh = u.em1;
      double phi = u.em1 / hh - 1.0;    /* h_phi_k for k = 1 */
      double b1 = phi / bh;             /* factorial 1 */
      phi = phi / hh - 0.5;             /* k = 2: minus 1/2! */
      double b2 = phi * 2.0 / bh;       /* factorial 2 */
      inv_r = inv_ratio(s->sigmas[i - 2], lambda_of(sig_s0), u.h);
      if (inv_r == 0.0) { /* r infinite: the D1 column drops out, ρ0 = 0 */
        rho0 = 0.0;
        rho1 = b1;
      } else {
        double rr = 1.0 / inv_r;
        rho0 = (b1 - b2) / (1.0 - rr);
        rho1 = b1 - rho0;
      }
    }
    double ab = u.alpha_t * u.em1; /* α_t·B_h, and α_t·h_phi_1 (bh2: the same) */
    const mr_tensor *xs[4] = {s->last_sample, s->m_last, p == 2 ? s->m_prev : NULL, r->m};
    double c[4] = {u.ratio, -ab + ab * (rho0 * inv_r + rho1), -ab * rho0 * inv_r, -ab * rho1};
    st = comb(4, xs, c, MR_F32, &r->last_sample);
  } else {
    const mr_tensor *xs[1] = {x};
    double c[1] = {1.0};
    st = comb(1, xs, c, MR_F32, &r->last_sample);
  }
  if (st != MR_OK) return st;

  int order = s->steps - i < 2 ? s->steps - i : 2; /* lower_order_final */
  if (order > s->lower_order_nums + 1) order = s->lower_order_nums + 1; /* warm-up */
  r->this_order = order;
  double sig_t = s->sigmas[i + 1];
  update u = update_terms(sig, sig_t);
  double ab = u.alpha_t * u.em1;
  if (sig_t == 0.0) { /* λ_t = +∞: h_phi_1 = −1, σ_t/σ_s0 = 0, so x_next = m_t exactly;
                         only the last step gets here, and lower_order_final made it first order */
    const mr_tensor *xs[1] = {r->m};
    double c[1] = {1.0};
    return comb(1, xs, c, x->dtype, &r->x_next);
  }
  double inv_r = order == 2 ? inv_ratio(s->sigmas[i - 1], lambda_of(sig), u.h) : 0.0;
  /* x_next = ratio·x_c − ab·m_t − ab·½·(m_prev − m_t)/r */
  const mr_tensor *xs[3] = {r->last_sample, r->m, order == 2 ? s->m_last : NULL};
  double c[3] = {u.ratio, -ab + 0.5 * ab * inv_r, -0.5 * ab * inv_r};
  return comb(3, xs, c, x->dtype, &r->x_next);
}

mr_status mr_sampler_step(mr_sampler *s, const mr_tensor *model_output, int64_t timestep,
                            const mr_tensor *sample, mr_tensor **out) {
  *out = NULL;
  mr_status st = check_tensors(s, model_output, sample);
  int i = 0;
  if (st == MR_OK) st = find_index(s, timestep, &i);
  if (st != MR_OK) return st;
  step_result r = {0};
  switch (s->kind) {
  case MR_SAMPLER_UNIPC: st = unipc_step(s, i, model_output, sample, &r); break;
  case MR_SAMPLER_DPMPP: st = dpmpp_step(s, i, model_output, sample, &r); break;
  case MR_SAMPLER_EULER: st = euler_step(s, i, model_output, sample, &r); break;
  }
  if (st != MR_OK) {
    mr_tensor_free(r.x_next);
    mr_tensor_free(r.m);
    mr_tensor_free(r.last_sample);
    return st;
  }
  /* commit: M shifts by one, the orders advance */
  if (s->next < 0) {
    s->ndim = sample->ndim;
    memcpy(s->shape, sample->shape, (size_t)sample->ndim * sizeof *s->shape);
  }
  if (r.m) {
    mr_tensor_free(s->m_prev);
    s->m_prev = s->m_last;
    s->m_last = r.m;
  }
  if (r.last_sample) {
    mr_tensor_free(s->last_sample);
    s->last_sample = r.last_sample;
  }
  s->this_order = r.this_order;
  if (s->lower_order_nums < 2) s->lower_order_nums++;
  s->next = i + 1;
  *out = r.x_next;
  return MR_OK;
}

/* ---------------------------------------------------------------- guidance */

mr_status mr_guidance(const mr_tensor *v_cond, const mr_tensor *v_uncond, float scale, mr_tensor **out) {
  const mr_tensor *xs[2] = {v_cond, v_uncond};
  float c[2] = {scale, (float)(1.0 - (double)scale)};
  return mr_op_lincomb(2, xs, c, out);
}
