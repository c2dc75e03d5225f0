/* mr.redis: a minimal Redis client on libhiredis, for the batch queue
   (moonreel.queue: Redis Streams with a consumer group). One blocking
   connection per object and one call that sends any command:

     local r = assert(mr.redis.connect("127.0.0.1", 6379, {timeout = 10}))
     r:call("XADD", "jobs", "*", "job", json)      --> "1718000000000-0"
     r:call("XPENDING", "jobs", "workers")          --> {0, mr.redis.null, ...}

   Replies: a bulk or status string is a string, an integer an integer, an
   array a table (nested), a nil reply mr.redis.null (so arrays stay
   sequences). A server error reply returns nil, its message and its first
   word as the code ("BUSYGROUP", "NOGROUP", "ERR"); a connection failure
   returns nil, message, "MR_EIO" and leaves the object unusable (every later
   call fails the same way). Wrong argument types raise. */
#include <hiredis/hiredis.h>
#include <string.h>
#include <sys/time.h>

#include "l_internal.h"

#define REDIS_CONN "mr.Redis"
#define REPLY_BOX "mr.RedisReply"
#define MAX_ARGS 4096

typedef struct conn_box {
  redisContext *c; /* NULL once closed */
  char where[96];  /* "host:port", for messages */
  char err[160];   /* the I/O failure that closed it, "" before one */
} conn_box;

static conn_box *check_conn(lua_State *L) { return luaL_checkudata(L, 1, REDIS_CONN); }

static int conn_close(lua_State *L) {
  conn_box *b = check_conn(L);
  if (b->c) redisFree(b->c);
  b->c = NULL;
  return 0;
}

static struct timeval to_timeval(double s) {
  struct timeval tv;
  tv.tv_sec = (time_t)s;
  tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
  return tv;
}

static int fail_io(lua_State *L, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushliteral(L, "MR_EIO");
  return 3;
}

/* mr.redis.connect(host, port [, {timeout = seconds}]) -> conn | nil, msg, code */
static int l_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  lua_Integer port = luaL_checkinteger(L, 2);
  luaL_argcheck(L, port > 0 && port < 65536, 2, "port must be 1 .. 65535");
  double timeout = 10;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    if (lua_getfield(L, 3, "timeout") != LUA_TNIL) timeout = luaL_checknumber(L, -1);
    lua_pop(L, 1);
    luaL_argcheck(L, timeout > 0 && timeout <= 86400, 3, "timeout must be 0 < seconds <= 86400");
  }
  conn_box *b = lua_newuserdatauv(L, sizeof *b, 0); /* box first: a raise leaves nothing open */
  b->c = NULL;
  b->err[0] = 0;
  snprintf(b->where, sizeof b->where, "%s:%d", host, (int)port);
  luaL_setmetatable(L, REDIS_CONN);
  redisContext *c = redisConnectWithTimeout(host, (int)port, to_timeval(timeout));
  if (!c) return fail_io(L, "redis: out of memory");
  if (c->err) {
    char msg[384];
    snprintf(msg, sizeof msg, "cannot connect to redis at %s: %s", b->where, c->errstr);
    redisFree(c);
    return fail_io(L, msg);
  }
  if (redisSetTimeout(c, to_timeval(timeout)) != REDIS_OK) {
    char msg[384];
    snprintf(msg, sizeof msg, "redis at %s: cannot set the timeout: %s", b->where, c->errstr);
    redisFree(c);
    return fail_io(L, msg);
  }
  b->c = c;
  return 1;
}

/* A reply held by a userdata while it is converted, so a raise (no Lua
   memory) frees it through __gc. */
static int reply_release(lua_State *L) {
  redisReply **r = luaL_checkudata(L, 1, REPLY_BOX);
  if (*r) freeReplyObject(*r);
  *r = NULL;
  return 0;
}

static void push_reply(lua_State *L, const redisReply *r) {
  luaL_checkstack(L, 3, "redis reply too deep");
  switch (r->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS:
  case REDIS_REPLY_ERROR: lua_pushlstring(L, r->str, r->len); break;
  case REDIS_REPLY_INTEGER: lua_pushinteger(L, (lua_Integer)r->integer); break;
  case REDIS_REPLY_ARRAY:
    lua_createtable(L, r->elements > 1 << 24 ? 0 : (int)r->elements, 0);
    for (size_t i = 0; i < r->elements; i++) {
      push_reply(L, r->element[i]);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    break;
  default: lua_pushlightuserdata(L, NULL); break; /* nil: mr.redis.null */
  }
}

/* conn:call(command, args...) -> reply | nil, message, code */
static int conn_call(lua_State *L) {
  conn_box *b = check_conn(L);
  int argc = lua_gettop(L) - 1;
  luaL_argcheck(L, argc >= 1, 2, "a command is required");
  luaL_argcheck(L, argc <= MAX_ARGS, 2, "too many arguments");
  const char **argv = lua_newuserdatauv(L, (size_t)argc * (sizeof *argv + sizeof(size_t)), 0);
  size_t *lens = (size_t *)(argv + argc);
  for (int i = 0; i < argc; i++) {
    int t = lua_type(L, i + 2);
    if (t != LUA_TSTRING && t != LUA_TNUMBER) luaL_typeerror(L, i + 2, "string or number");
    argv[i] = lua_tolstring(L, i + 2, &lens[i]); /* a number becomes a string in place: stays alive */
  }
  if (!b->c) {
    char msg[320];
    snprintf(msg, sizeof msg, "redis at %s: %s", b->where, b->err[0] ? b->err : "connection is closed");
    return fail_io(L, msg);
  }
  redisReply **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  if (luaL_newmetatable(L, REPLY_BOX)) {
    lua_pushcfunction(L, reply_release);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  *box = redisCommandArgv(b->c, argc, argv, lens);
  if (!*box) {
    /* an I/O or protocol failure: the context cannot be used again */
    snprintf(b->err, sizeof b->err, "%s", b->c->errstr[0] ? b->c->errstr : "connection lost");
    redisFree(b->c);
    b->c = NULL;
    char msg[320];
    snprintf(msg, sizeof msg, "redis at %s: %s", b->where, b->err);
    return fail_io(L, msg);
  }
  redisReply *r = *box;
  if (r->type == REDIS_REPLY_ERROR) {
    lua_pushnil(L);
    lua_pushlstring(L, r->str, r->len);
    size_t w = strcspn(r->str, " ");
    lua_pushlstring(L, r->str, w);
    freeReplyObject(r);
    *box = NULL;
    return 3;
  }
  push_reply(L, r);
  freeReplyObject(r);
  *box = NULL;
  return 1;
}

static int conn_tostring(lua_State *L) {
  conn_box *b = check_conn(L);
  if (b->c) lua_pushfstring(L, "mr.Redis(%s)", b->where);
  else lua_pushfstring(L, "mr.Redis(%s, closed)", b->where);
  return 1;
}

void mrl_open_redis(lua_State *L, int module) {
  static const luaL_Reg meta[] = {{"__gc", conn_close}, {"__close", conn_close}, {"__tostring", conn_tostring},
                                  {NULL, NULL}};
  static const luaL_Reg methods[] = {{"call", conn_call}, {"close", conn_close}, {NULL, NULL}};
  luaL_newmetatable(L, REDIS_CONN);
  luaL_setfuncs(L, meta, 0);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, l_connect);
  lua_setfield(L, -2, "connect");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_setfield(L, module, "redis");
}
