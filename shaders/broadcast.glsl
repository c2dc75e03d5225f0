// Shared by the broadcasting elementwise kernels (binary, mul_add).
//
// The output is contiguous; the inputs are strided views whose strides are 0
// along broadcast dims. The host merges dims every input walks contiguously
// (engine/ops/op_elementwise.c), so ndim is usually 1 or 2, and splits the
// output into runs that fit the binding limit: this invocation's element is
// y_off + i, input k's is off[k] + the unravelled index dotted with its strides.
//
// With X4 (the spec constant after the kernel's others) a lane takes output
// elements 4j .. 4j+3: the host sets it when every input walks its innermost
// dim densely (stride 1, rows and starts at multiples of 4) or not at all
// (stride 0: one value for the four), and rows are a multiple of 4 long.
#define MR_BCAST_INPUTS 3
layout(push_constant) uniform Push {
  uint ndim, n;
  float beta;                      // mul_add's constant (binary ignores it)
  uint off[MR_BCAST_INPUTS];       // first element of each input's window
  uint shape[MR_MAX_DIMS];
  uint strides[MR_BCAST_INPUTS][MR_MAX_DIMS];
  uint y_off;                      // the output's first element (a window of a larger output)
} p;

// The index of element i (row-major over shape) in each input.
uvec3 mr_bcast_index(uint i) {
  uvec3 at = uvec3(p.off[0], p.off[1], p.off[2]);
  for (int d = int(p.ndim) - 1; d >= 0; d--) {
    uint c = i % p.shape[d];
    i /= p.shape[d];
    at += c * uvec3(p.strides[0][d], p.strides[1][d], p.strides[2][d]);
  }
  return at;
}

// Input k's innermost stride is 0: its four elements are one value.
bool mr_bcast_splat(uint k) { return p.strides[k][p.ndim - 1u] == 0u; }
