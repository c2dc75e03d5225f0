// Shared declarations for every moonreel compute shader.
//
// Tensors are storage buffers whose element type is chosen per pipeline by a
// specialization constant (0 = f32, 1 = f16, 2 = bf16), so one SPIR-V module
// serves every storage dtype and the driver folds the branch away. 16-bit
// types are read as raw uint16 words: f16 through unpackHalf2x16, bf16 by
// shifting into the high half of an f32. Arithmetic is always f32.
#extension GL_EXT_shader_16bit_storage : require

#define DT_F32 0u
#define DT_F16 1u
#define DT_BF16 2u
#define MR_MAX_DIMS 5

float mr_from16(uint dt, uint h) {
  return dt == DT_F16 ? unpackHalf2x16(h).x : uintBitsToFloat(h << 16);
}

uint mr_to16(uint dt, float v) {
  if (dt == DT_F16) return packHalf2x16(vec2(v, 0.0)) & 0xffffu;
  uint u = floatBitsToUint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;  // NaN stays NaN
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;                   // round to nearest even
}

// A read-only tensor at binding B, dtype from spec constant ID: NAME_load(i).
#define MR_TENSOR_RO(B, NAME, ID)                                                     \
  layout(constant_id = ID) const uint NAME##_dt = 0u;                                 \
  layout(std430, binding = B) readonly buffer NAME##_f32_block { float NAME##_f32[]; }; \
  layout(std430, binding = B) readonly buffer NAME##_u16_block { uint16_t NAME##_u16[]; }; \
  float NAME##_load(uint i) {                                                         \
    if (NAME##_dt == DT_F32) return NAME##_f32[i];                                    \
    return mr_from16(NAME##_dt, uint(NAME##_u16[i]));                                 \
  }

// A written tensor at binding B: NAME_store(i, v) (and NAME_load for read-modify-write).
#define MR_TENSOR_RW(B, NAME, ID)                                                     \
  layout(constant_id = ID) const uint NAME##_dt = 0u;                                 \
  layout(std430, binding = B) buffer NAME##_f32_block { float NAME##_f32[]; };          \
  layout(std430, binding = B) buffer NAME##_u16_block { uint16_t NAME##_u16[]; };       \
  float NAME##_load(uint i) {                                                         \
    if (NAME##_dt == DT_F32) return NAME##_f32[i];                                    \
    return mr_from16(NAME##_dt, uint(NAME##_u16[i]));                                 \
  }                                                                                   \
  void NAME##_store(uint i, float v) {                                                \
    if (NAME##_dt == DT_F32) NAME##_f32[i] = v;                                       \
    else NAME##_u16[i] = uint16_t(mr_to16(NAME##_dt, v));                             \
  }

// Four consecutive elements a lane (the *4 forms below; element index i a
// multiple of 4, the binding's start 16-byte aligned): on lavapipe a load
// whose address differs per lane is a loop over the lanes, so one 16-byte
// load in place of four element loads made a contiguous add 2.9x as fast
// (docs/performance.md). 16-bit types move as one uvec2 of 4 halves.
vec4 mr_from16x4(uint dt, uvec2 h) {
  if (dt == DT_F16) return vec4(unpackHalf2x16(h.x), unpackHalf2x16(h.y));
  return vec4(uintBitsToFloat(h.x << 16), uintBitsToFloat(h.x & 0xffff0000u), uintBitsToFloat(h.y << 16),
              uintBitsToFloat(h.y & 0xffff0000u));
}

uvec2 mr_to16x4(uint dt, vec4 v) {
  return uvec2(mr_to16(dt, v.x) | (mr_to16(dt, v.y) << 16), mr_to16(dt, v.z) | (mr_to16(dt, v.w) << 16));
}

// MR_TENSOR_RO with NAME_load4(i): elements i .. i+3.
#define MR_TENSOR_RO4(B, NAME, ID)                                                    \
  MR_TENSOR_RO(B, NAME, ID)                                                           \
  layout(std430, binding = B) readonly buffer NAME##_v4_block { vec4 NAME##_v4[]; };  \
  layout(std430, binding = B) readonly buffer NAME##_h4_block { uvec2 NAME##_h4[]; }; \
  vec4 NAME##_load4(uint i) {                                                         \
    if (NAME##_dt == DT_F32) return NAME##_v4[i >> 2];                                \
    return mr_from16x4(NAME##_dt, NAME##_h4[i >> 2]);                                 \
  }

// MR_TENSOR_RW with NAME_store4(i, v): elements i .. i+3.
#define MR_TENSOR_RW4(B, NAME, ID)                                                    \
  MR_TENSOR_RW(B, NAME, ID)                                                           \
  layout(std430, binding = B) buffer NAME##_v4_block { vec4 NAME##_v4[]; };           \
  layout(std430, binding = B) buffer NAME##_h4_block { uvec2 NAME##_h4[]; };          \
  void NAME##_store4(uint i, vec4 v) {                                                \
    if (NAME##_dt == DT_F32) NAME##_v4[i >> 2] = v;                                   \
    else NAME##_h4[i >> 2] = mr_to16x4(NAME##_dt, v);                                 \
  }

// GELU, tanh approximation: 0.5 x (1 + tanh u) = x / (1 + e^-2u), no
// cancellation where tanh u is near -1 (unary.comp, and the matmul kernels'
// fused activation).
float mr_gelu_tanh(float x) { return x / (1.0 + exp(-1.5957691216057308 * (x + 0.044715 * x * x * x))); }

// A matmul kernel's activation on its outputs (spec constant ACT:
// mr_matmul_act; 0 none, 1 GELU tanh): one pass over the output saved.
#define MR_ACT(ACT, v) ((ACT) == 1u ? mr_gelu_tanh(v) : (v))

// The linear workgroup id of a grid split over x and y (see mr_gpu_grid).
uint mr_group_id() { return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x; }

// Element index of the i-th element (row-major over shape) in a strided view.
uint mr_strided(uint i, uint ndim, uint shape[MR_MAX_DIMS], uint strides[MR_MAX_DIMS]) {
  uint idx = 0u;
  for (int d = int(ndim) - 1; d >= 0; d--) {
    uint c = i % shape[d];
    i /= shape[d];
    idx += c * strides[d];
  }
  return idx;
}
