-- luarocks make: builds moonreel with CMake and installs the Lua module into
-- a Lua 5.4 tree (docs/embedding.md, "With luarocks"). The recipes, the
-- default model and the LuaLS annotations stay in the rock's folder
-- (share/moonreel), where the module finds the recipes. Needs the packages
-- scripts/setup.sh installs (Vulkan, FFmpeg, libwebp, cJSON, glslang);
-- JSON comes from the engine's cJSON, so the rock depends on no other rock.
rockspec_format = "3.0"
package = "moonreel"
version = "scm-1"
source = {
  -- `luarocks make` builds the tree it runs in and fetches nothing; the
  -- format requires a url all the same
  url = "git+file://.",
}
description = {
  summary = "Video diffusion models (Wan 2.1 / 2.2) on Vulkan compute, from Lua",
  detailed = [[
A C11 engine that runs the Wan 2.1 / 2.2 family on Vulkan compute (any GPU,
or Mesa's lavapipe on the CPU), with tensors, model components, samplers and
video I/O as Lua objects, and recipes for text-to-video, image-to-video,
first-last-frame and reference-to-video.
]],
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    MOONREEL_LUA_ROCK = "ON",
    MOONREEL_BUILD_TESTS = "OFF",
    MOONREEL_INSTALL_LUA_CMODDIR = "$(LIBDIR)",
  },
}
