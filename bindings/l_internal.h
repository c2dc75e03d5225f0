/* Shared by the bindings' l_*.c files; not part of the embedding API. */
#ifndef MR_L_INTERNAL_H
#define MR_L_INTERNAL_H

#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>

#include "moonreel.h"

#define MRL_TENSOR "mr.Tensor"

/* Per-state module data, a userdata in the registry (created by luaopen). */
typedef struct mrl_state {
  mr_ctx *ctx;
  bool owned;           /* created here, freed by the state's __gc */
  bool failed;          /* mr_ctx_new failed once; do not retry every call */
  size_t since_gc;      /* device bytes allocated since the last forced collection */
  size_t threshold;     /* collect when since_gc passes this */
  size_t live;          /* device bytes held by open, owning tensor handles */
  unsigned collections; /* forced collections so far */
  void (*on_ctx)(mr_ctx *, void *);
  void *on_ctx_user;
} mrl_state;

/* The userdata behind mr.Tensor. user value 1: the base a view keeps alive. */
typedef struct mrl_tensor_box {
  mr_tensor *t;     /* NULL once closed (or before the engine call filled it) */
  size_t bytes;     /* device bytes this handle accounts for (0 for views) */
  mrl_state *state;
} mrl_tensor_box;

mrl_state *mrl_state_get(lua_State *L);
/* The module's context, created on first use; raises if none can be made. */
mr_ctx *mrl_ctx(lua_State *L);
/* Full collection to give device memory back (used before retrying an
   allocation that failed with MR_EDEVMEM). */
void mrl_collect(lua_State *L);

/* Pushes a closed tensor box (two-phase create: box first, engine call next). */
mrl_tensor_box *mrl_push_box(lua_State *L);
/* Fills a pushed box; owning = the tensor has its own storage (counts toward
   GC pressure). May run a garbage collection. */
void mrl_box_set(lua_State *L, mrl_tensor_box *b, mr_tensor *t, bool owning);
/* Pushes a new box for a view of the tensor at index base (kept alive). */
mrl_tensor_box *mrl_push_view_box(lua_State *L, int base);

mr_tensor *mrl_check_tensor(lua_State *L, int arg);
mr_tensor *mrl_opt_tensor(lua_State *L, int arg); /* nil/none -> NULL */
bool mrl_is_tensor(lua_State *L, int arg);

/* Raises the context's last error message. */
int mrl_raise(lua_State *L, mr_ctx *ctx);
/* Pushes nil, message, code name; returns 3. */
int mrl_fail(lua_State *L, mr_ctx *ctx, mr_status st);

/* A dtype name at arg (def when none/nil); storage_only limits to f32/f16/bf16. */
mr_dtype mrl_check_dtype(lua_State *L, int arg, mr_dtype def, bool storage_only);
/* A Lua dim (1-based, negative from the end) at arg, as a 0-based dim. */
int mrl_check_dim(lua_State *L, int arg, int ndim);
int mrl_opt_dim(lua_State *L, int arg, int ndim, int def0);
/* A shape: a table of sizes, or one integer; returns ndim. allow_infer lets one be -1. */
int mrl_check_shape(lua_State *L, int arg, int64_t *shape, bool allow_infer);
/* "2x3" into buf. */
const char *mrl_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap);

void mrl_open_tensor(lua_State *L, int module, int meta, int methods);
void mrl_open_ops(lua_State *L, int module, int meta, int methods);
void mrl_open_io(lua_State *L, int module);
void mrl_open_models(lua_State *L, int module);
void mrl_open_sample(lua_State *L, int module);
void mrl_open_media(lua_State *L, int module);
/* The JSON table the embedded Lua parts get as "cjson": lua-cjson's encode, decode,
   null, new, decode_max_depth, decode_invalid_numbers (l_json.c). */
void mrl_push_json(lua_State *L);
void mrl_open_redis(lua_State *L, int module);

/* Runs an allocating engine call; on MR_EDEVMEM collects garbage (Lua may
   hold dead tensors it has not finalized yet) and tries once more. */
#define MRL_RETRY_DEVMEM(L, st, call) \
  do {                                \
    (st) = (call);                    \
    if ((st) == MR_EDEVMEM) {         \
      mrl_collect(L);                 \
      (st) = (call);                  \
    }                                 \
  } while (0)

/* For a binding that returns one new tensor: pushes the result box first
   (two-phase), runs call (which writes its result into out_) with the
   MR_EDEVMEM retry, raises the context's message on failure (leaving only the
   closed box for the GC) and returns 1 from the enclosing function. */
#define MRL_RUN_OP(L, ctx, call)                \
  do {                                          \
    mrl_tensor_box *box_ = mrl_push_box(L);     \
    mr_tensor *out_ = NULL;                     \
    mr_status st_;                              \
    MRL_RETRY_DEVMEM(L, st_, call);             \
    if (st_ != MR_OK) return mrl_raise(L, ctx); \
    mrl_box_set(L, box_, out_, true);           \
    return 1;                                   \
  } while (0)

#endif

