/*
 * moonreel — the command-line interpreter: runs a Lua script with the
 * moonreel module built in, or an interactive REPL.
 *
 * It follows the design of the stock `lua` interpreter: all work runs inside
 * one protected call, errors get a traceback from a message handler, each
 * REPL line is tried first as `return <line>` so expressions print, and an
 * incomplete chunk (a syntax error ending in <eof>) asks for more lines.
 * Ctrl-C sets a Lua hook (a signal handler must not touch the state) and also
 * interrupts the engine, because a hook never fires while a long GPU call
 * runs inside C. SIGTERM does the same and then ends the run: the script
 * unwinds (its writers delete their temporary files), and the process exits
 * 143, as a run stopped by Ctrl-C exits 130.
 */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "moonreel_lua.h"

#ifdef MR_HAVE_READLINE
#include <readline/history.h>
#include <readline/readline.h>
#endif

static const char *progname = "moonreel";

/* For the signal handler only: it can reach nothing else. */
static lua_State *volatile sig_state = NULL;
static _Atomic(mr_ctx *) sig_ctx = NULL;
static volatile sig_atomic_t sig_seen = 0;
/* The signal that ends this run (SIGTERM; SIGINT outside the REPL), 0 if
   none: the exit status becomes 128 + it (exit_status). */
static volatile sig_atomic_t sig_stop = 0;
/* In the REPL Ctrl-C stops the line, not the run. */
static volatile sig_atomic_t in_repl = 0;

/* ------------------------------------------------------------- messages */

static void print_usage(FILE *f) {
  fprintf(f,
          "usage: %s [options] [script [args]]\n"
          "Available options are:\n"
          "  -e stat   execute string 'stat'\n"
          "  -i        enter interactive mode after executing 'script'\n"
          "  -l mod    require library 'mod' into global 'mod'\n"
          "  -v        show version information\n"
          "  --version show version information\n"
          "  -h        show this help\n"
          "  --        stop handling options\n"
          "  -         stop handling options and execute stdin\n"
          "With no arguments: the REPL when stdin is a terminal, else stdin runs as a script.\n",
          progname);
}

static void print_version(void) {
  printf("moonreel %s (%s)\n", MR_VERSION_STRING, LUA_RELEASE);
  fflush(stdout);
}

static void print_message(const char *msg) {
  if (progname) fprintf(stderr, "%s: ", progname);
  fprintf(stderr, "%s\n", msg);
  fflush(stderr);
}

/* Prints the error on top of the stack (if any) and pops it. A run that a
   signal stops gets its message's first line only: the traceback says
   nothing about where the signal happened to land. */
static int report(lua_State *L, int status) {
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (msg == NULL) msg = "(error object is not a string)";
    const char *nl = sig_stop ? strchr(msg, '\n') : NULL;
    if (progname) fprintf(stderr, "%s: ", progname);
    fprintf(stderr, "%.*s\n", nl ? (int)(nl - msg) : (int)strlen(msg), msg);
    fflush(stderr);
    lua_pop(L, 1);
  }
  return status;
}

/* --------------------------------------------------- protected calls */

static void stop_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

static void on_signal(int sig) {
  signal(sig, SIG_DFL); /* a second one ends the process at once */
  sig_seen = 1;
  if (sig == SIGTERM || !in_repl) sig_stop = sig;
  lua_State *L = sig_state;
  if (L) lua_sethook(L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  mr_ctx *ctx = atomic_load(&sig_ctx);
  if (ctx) mr_ctx_interrupt(ctx); /* signal-safe: an atomic store */
}

static void on_ctx(mr_ctx *ctx, void *user) {
  (void)user;
  atomic_store(&sig_ctx, ctx);
}

/* After an interrupted call: the hook may still be armed (the engine raised
   first) and the engine flag may be unconsumed (Ctrl-C came while Lua code
   ran); either would cancel the next line. A one-element tensor creation
   dispatches once, which consumes the flag. */
static void clear_interrupt(lua_State *L) {
  lua_sethook(L, NULL, 0, 0);
  if (!sig_seen) return;
  sig_seen = 0;
  mr_ctx *ctx = moonreel_lua_ctx(L);
  if (!ctx) return;
  int64_t one = 1;
  mr_tensor *t = NULL;
  mr_tensor_new(ctx, MR_F32, 1, &one, &t);
  mr_tensor_free(t);
}

static int msg_handler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Calls the function below narg arguments with a traceback handler and Ctrl-C armed. */
static int docall(lua_State *L, int narg, int nres) {
  int base = lua_gettop(L) - narg;
  lua_pushcfunction(L, msg_handler);
  lua_insert(L, base);
  sig_state = L;
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  int status = lua_pcall(L, narg, nres, base);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  lua_remove(L, base);
  clear_interrupt(L);
  return status;
}

/* ---------------------------------------------------------- exit status */

/* What the process exits with: 143 once SIGTERM reached the running script,
   130 for a run that failed after Ctrl-C, else the script's own status. A
   signal that came while the script ran but did not stop it (it landed
   after the last instruction, or the script caught the error) still gives
   143, so the line that says so is printed here: every 143 says why. */
static int exit_status(int status) {
  if (sig_stop == SIGTERM) {
    if (status == EXIT_SUCCESS) print_message("interrupted (SIGTERM) after the script had finished");
    return 128 + SIGTERM;
  }
  if (sig_stop == SIGINT && status != EXIT_SUCCESS) return 128 + SIGINT;
  return status;
}

/* From the moment the script returns a signal is ignored: the run is done
   and its outputs are whole, so it does not change the status, and the
   cleanup must complete. Closing the state runs the finalizers that delete
   temporary files; a hook raising inside one (Lua then skips the rest of
   that finalizer) or a default SIGTERM would leave a file behind. */
static void hold_signals(lua_State *L) {
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  sig_state = NULL;
  lua_sethook(L, NULL, 0, 0);
}

/* os.exit([code [, close]]) as the stock one does it, with signals held and
   the status from exit_status. */
static int cli_exit(lua_State *L) {
  int status = lua_isboolean(L, 1) ? (lua_toboolean(L, 1) ? EXIT_SUCCESS : EXIT_FAILURE)
                                   : (int)luaL_optinteger(L, 1, EXIT_SUCCESS);
  bool close = lua_toboolean(L, 2);
  hold_signals(L);
  if (close) lua_close(L);
  exit(exit_status(status));
}

static int dochunk(lua_State *L, int status) {
  if (status == LUA_OK) status = docall(L, 0, 0);
  return report(L, status);
}

static int dostring(lua_State *L, const char *s, const char *name) {
  return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* require mod into global mod (-l). */
static int dolibrary(lua_State *L, const char *name) {
  lua_getglobal(L, "require");
  lua_pushstring(L, name);
  int status = docall(L, 1, 1);
  if (status == LUA_OK) lua_setglobal(L, name);
  return report(L, status);
}

/* ------------------------------------------------------------- arguments */

/* arg[0] = script, arg[1..] its arguments, arg[-1..] the interpreter and
   its options; with no script every entry is positive from argv[0]. */
static void create_arg_table(lua_State *L, char **argv, int argc, int script) {
  if (script == argc) script = 0;
  lua_createtable(L, argc - script - 1 > 0 ? argc - script - 1 : 0, script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

static void replace_exit(lua_State *L) {
  lua_getglobal(L, "os");
  lua_pushcfunction(L, cli_exit);
  lua_setfield(L, -2, "exit");
  lua_pop(L, 1);
}

enum { HAS_ERROR = 1, HAS_I = 2, HAS_V = 4, HAS_E = 8, HAS_H = 16 };

/* Scans options; sets *script to the index of the script (argc if none). */
static int collect_args(char **argv, int argc, int *script) {
  int flags = 0;
  int i;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    *script = i;
    if (a[0] != '-') return flags;
    if (strcmp(a, "--") == 0) {
      *script = i + 1 < argc ? i + 1 : argc;
      return flags;
    }
    if (strcmp(a, "-") == 0) return flags;
    if (strcmp(a, "--version") == 0 || strcmp(a, "-v") == 0) flags |= HAS_V;
    else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) flags |= HAS_H;
    else if (strcmp(a, "-i") == 0) flags |= HAS_I | HAS_V;
    else if (a[1] == 'e' || a[1] == 'l') {
      if (a[1] == 'e') flags |= HAS_E;
      if (a[2] == '\0' && (++i >= argc || argv[i][0] == '-')) return HAS_ERROR; /* missing argument */
    } else {
      return HAS_ERROR;
    }
  }
  *script = argc;
  return flags;
}

/* Runs -e and -l in order. */
static int run_args(lua_State *L, char **argv, int n) {
  for (int i = 1; i < n; i++) {
    const char *a = argv[i];
    if (a[0] != '-' || (a[1] != 'e' && a[1] != 'l')) continue;
    const char *extra = a[2] ? a + 2 : argv[++i];
    int status = a[1] == 'e' ? dostring(L, extra, "=(command line)") : dolibrary(L, extra);
    if (status != LUA_OK) return 0;
  }
  return 1;
}

static int push_args(lua_State *L) {
  if (lua_getglobal(L, "arg") != LUA_TTABLE) luaL_error(L, "'arg' is not a table");
  int n = (int)luaL_len(L, -1);
  luaL_checkstack(L, n + 3, "too many arguments to script");
  for (int i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  lua_remove(L, -n - 1);
  return n;
}

static int handle_script(lua_State *L, char **argv) {
  const char *fname = argv[0];
  if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0) fname = NULL; /* stdin */
  int status = luaL_loadfile(L, fname);
  if (status == LUA_OK) status = docall(L, push_args(L), LUA_MULTRET);
  return report(L, status);
}

/* ------------------------------------------------------------ search paths */

static bool is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Adds root/scripts (for require "moonreel.x"), root/scripts/moonreel and
   root/recipes/lib in front of package.path, when they exist. */
static void add_root(luaL_Buffer *b, const char *root) {
  static const char *const dirs[] = {"scripts", "scripts/moonreel", "recipes/lib"};
  char dir[PATH_MAX];
  for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
    snprintf(dir, sizeof dir, "%s/%s", root, dirs[i]);
    if (!is_dir(dir)) continue;
    luaL_addstring(b, dir);
    luaL_addstring(b, "/?.lua;");
    luaL_addstring(b, dir);
    luaL_addstring(b, "/?/init.lua;");
  }
}

static void set_paths(lua_State *L) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  /* next to the executable: an installed share/moonreel, or the source tree */
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) {
      *slash = '\0';
      char root[PATH_MAX + 32];
      snprintf(root, sizeof root, "%s/../share/moonreel", exe);
      add_root(&b, root);
      snprintf(root, sizeof root, "%s/..", exe);
      add_root(&b, root);
    }
  }
#ifdef MR_SOURCE_DIR
  add_root(&b, MR_SOURCE_DIR);
#endif
  luaL_pushresult(&b); /* our folders, then the usual path */
  lua_getglobal(L, "package");
  lua_pushvalue(L, -2);
  lua_getfield(L, -2, "path");
  lua_concat(L, 2);
  lua_setfield(L, -2, "path");
  lua_pop(L, 2);
}

/* The module is built in: package.loaded and package.preload both know it,
   so `require "moonreel"` never searches the disk. */
static void preload_module(lua_State *L) {
  moonreel_lua_on_ctx(L, on_ctx, NULL);
  luaL_requiref(L, "moonreel", luaopen_moonreel, 0);
  lua_pop(L, 1);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_moonreel);
  lua_setfield(L, -2, "moonreel");
  lua_pop(L, 1);
}

/* --------------------------------------------------------------------- REPL */

static bool use_readline = false;
static char history_path[PATH_MAX];

#ifdef MR_HAVE_READLINE
static sigjmp_buf prompt_jmp;
static volatile sig_atomic_t at_prompt = 0;

static void on_sigint_prompt(int sig) {
  (void)sig;
  if (at_prompt) siglongjmp(prompt_jmp, 1);
}

/* Tab: the names mr.repl.complete gives for the expression before the cursor
   (globals, fields after '.', methods after ':'). */
static lua_State *complete_state = NULL;

static char *complete_next(const char *text, int state) {
  (void)text;
  lua_State *L = complete_state;
  if (!L) return NULL;
  /* the list is made on state 0 and kept in the registry until the last one */
  if (state == 0) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "moonreel.repl");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
      lua_pop(L, 1);
      return NULL;
    }
    lua_getfield(L, -1, "complete");
    lua_remove(L, -2);
    lua_pushlstring(L, rl_line_buffer, (size_t)rl_point);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
      lua_pop(L, 1);
      lua_pushnil(L);
    }
    lua_setfield(L, LUA_REGISTRYINDEX, "moonreel.completions");
  }
  lua_getfield(L, LUA_REGISTRYINDEX, "moonreel.completions");
  char *out = NULL;
  if (lua_istable(L, -1)) {
    lua_rawgeti(L, -1, state + 1);
    /* the word readline replaces is the whole expression ('.' and ':' do not
       break words), so a completion is the expression completed */
    const char *c = lua_tostring(L, -1);
    if (c) out = strdup(c);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return out;
}

static char **complete(const char *text, int start, int end) {
  (void)start;
  (void)end;
  rl_attempted_completion_over = 1; /* no file names */
  rl_completion_append_character = '\0'; /* "mr.recipe" may go on with "." */
  return rl_completion_matches(text, complete_next);
}
#endif

static const char *get_prompt(lua_State *L, int first) {
  if (lua_getglobal(L, first ? "_PROMPT" : "_PROMPT2") == LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushstring(L, first ? "> " : ">> ");
  } else {
    luaL_tolstring(L, -1, NULL);
    lua_remove(L, -2);
  }
  return lua_tostring(L, -1); /* left on the stack while reading */
}

/* Reads one line and pushes it (without the newline); 0 at end of input. */
static int read_line(lua_State *L, int first) {
  const char *prompt = get_prompt(L, first);
  char *line = NULL;
  size_t len = 0;
#ifdef MR_HAVE_READLINE
  if (use_readline) {
    /* Ctrl-C at the prompt abandons the line being typed and gives a fresh
       prompt (readline restores the terminal, then calls our handler) */
    if (sigsetjmp(prompt_jmp, 1)) {
      rl_free_line_state();
      rl_reset_after_signal();
      fputs("^C\n", stdout);
      fflush(stdout);
    }
    signal(SIGINT, on_sigint_prompt);
    at_prompt = 1;
    line = readline(prompt);
    at_prompt = 0;
    signal(SIGINT, SIG_DFL);
  } else
#endif
  {
    fputs(prompt, stdout);
    fflush(stdout);
    size_t cap = 0;
    if (getline(&line, &cap, stdin) < 0) {
      free(line);
      line = NULL;
    }
  }
  lua_pop(L, 1); /* prompt */
  if (line == NULL) return 0;
  len = strlen(line);
  if (len > 0 && line[len - 1] == '\n') line[--len] = '\0';
  if (first && line[0] == '=') lua_pushfstring(L, "return %s", line + 1); /* as Lua 5.2 */
  else lua_pushlstring(L, line, len);
  free(line);
  return 1;
}

static void save_line(lua_State *L, int idx) {
#ifdef MR_HAVE_READLINE
  size_t len;
  const char *line = lua_tolstring(L, idx, &len);
  if (use_readline && len > 0) {
    add_history(line);
    if (history_path[0]) write_history(history_path); /* kept even if the process dies */
  }
#else
  (void)L;
  (void)idx;
#endif
}

/* Compiles "return <line>" from the line on top; on success replaces it. */
static int try_return(lua_State *L) {
  const char *line = lua_tostring(L, -1);
  const char *retline = lua_pushfstring(L, "return %s;", line);
  int status = luaL_loadbuffer(L, retline, strlen(retline), "=stdin");
  if (status == LUA_OK) {
    lua_remove(L, -2); /* retline */
    save_line(L, -2);
  } else {
    lua_pop(L, 2); /* retline and the error */
  }
  return status;
}

/* A syntax error at the end of input means "keep reading". */
static int incomplete(lua_State *L, int status) {
  if (status != LUA_ERRSYNTAX) return 0;
  size_t len;
  const char *msg = lua_tolstring(L, -1, &len);
  static const char eof[] = "<eof>";
  size_t el = sizeof eof - 1;
  if (len >= el && strcmp(msg + len - el, eof) == 0) {
    lua_pop(L, 1);
    return 1;
  }
  return 0;
}

/* Compiles the statement on top, reading continuation lines while needed. */
static int multiline(lua_State *L) {
  for (;;) {
    size_t len;
    const char *line = lua_tolstring(L, 1, &len);
    int status = luaL_loadbuffer(L, line, len, "=stdin");
    if (!incomplete(L, status) || !read_line(L, 0)) {
      save_line(L, 1);
      return status;
    }
    lua_pushliteral(L, "\n");
    lua_insert(L, -2);
    lua_concat(L, 3); /* line .. "\n" .. continuation */
  }
}

/* -1 at end of input; else the load status with the chunk or error on top. */
static int load_line(lua_State *L) {
  lua_settop(L, 0);
  if (!read_line(L, 1)) return -1;
  int status = try_return(L);
  if (status != LUA_OK) status = multiline(L);
  lua_remove(L, 1); /* the source line */
  return status;
}

/* Results print through mr.repl.print (tables nested, tensors with shape and
   values, objects with their configuration); the global print if that fails
   to load. */
static void print_results(lua_State *L) {
  int n = lua_gettop(L);
  if (n == 0) return;
  luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moonreel.repl");
  if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {
    lua_getfield(L, -1, "print");
    lua_remove(L, -2);
  } else {
    lua_pop(L, 1);
    lua_getglobal(L, "print");
  }
  lua_insert(L, 1);
  if (lua_pcall(L, n, 0, 0) != LUA_OK)
    print_message(lua_pushfstring(L, "error calling 'print' (%s)", lua_tostring(L, -1)));
}

static void repl(lua_State *L) {
  const char *saved = progname;
  progname = NULL; /* errors at the prompt carry no program name */
#ifdef MR_HAVE_READLINE
  use_readline = isatty(STDIN_FILENO);
  if (use_readline) {
    rl_readline_name = "moonreel";
    complete_state = L;
    rl_attempted_completion_function = complete;
    rl_basic_word_break_characters = " \t\n\"'`@$><=;|&{(,+-*/%^#~[]"; /* '.' and ':' stay in a word */
    const char *home = getenv("HOME");
    if (home && *home) {
      snprintf(history_path, sizeof history_path, "%s/.moonreel_history", home);
      read_history(history_path);
    }
    stifle_history(1000);
  }
#endif
  /* the module as a global, for typing at the prompt */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moonreel");
  if (lua_pcall(L, 1, 1, 0) == LUA_OK) lua_setglobal(L, "mr");
  else lua_pop(L, 1);
  /* help(x): the documentation of a function or object (mr.repl.help) */
  (void)luaL_dostring(L, "help = function(x) local r = require 'moonreel.repl' local s, err = r.help(x) "
                         "print(s or err) end");

  int status;
  in_repl = 1;
  while ((status = load_line(L)) != -1) {
    if (status == LUA_OK) status = docall(L, 0, LUA_MULTRET);
    if (status == LUA_OK) print_results(L);
    else report(L, status);
    if (sig_stop == SIGTERM) break; /* the REPL was told to end */
  }
  in_repl = 0;
  lua_settop(L, 0);
  fputs("\n", stdout);
  fflush(stdout);
#ifdef MR_HAVE_READLINE
  if (use_readline && history_path[0]) write_history(history_path);
#endif
  progname = saved;
}

/* --------------------------------------------------------------------- main */

static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  int script = argc;
  int flags = collect_args(argv, argc, &script);
  if (flags & HAS_ERROR) {
    print_usage(stderr);
    return 0;
  }
  if (flags & HAS_H) {
    print_usage(stdout);
    lua_pushboolean(L, 1);
    return 1;
  }
  if (flags & HAS_V) print_version();
  luaL_checkversion(L);
  luaL_openlibs(L);
  replace_exit(L);
  set_paths(L);
  preload_module(L);
  create_arg_table(L, argv, argc, script);
  lua_gc(L, LUA_GCRESTART);
  lua_gc(L, LUA_GCGEN, 0, 0);
  if (!run_args(L, argv, script)) return 0;
  if (script < argc && handle_script(L, argv + script) != LUA_OK) return 0;
  if (flags & HAS_I) {
    repl(L);
  } else if (script == argc && !(flags & (HAS_E | HAS_V))) {
    if (isatty(STDIN_FILENO)) {
      print_version();
      repl(L);
    } else if (dochunk(L, luaL_loadfile(L, NULL)) != LUA_OK) {
      return 0;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

int main(int argc, char **argv) {
  if (argv[0] && argv[0][0]) progname = argv[0];
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    print_message("cannot create state: not enough memory");
    return EXIT_FAILURE;
  }
  lua_gc(L, LUA_GCSTOP); /* until the libraries are open */
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = lua_pcall(L, 2, 1, 0);
  int ok = lua_toboolean(L, -1);
  report(L, status);
  hold_signals(L);
  lua_close(L);
  return exit_status((status == LUA_OK && ok) ? EXIT_SUCCESS : EXIT_FAILURE);
}
