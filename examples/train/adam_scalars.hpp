#pragma once
/// @file
/// Adam's per-step scalars, shared by the host step (synthetic_training.cpp) and the GPU
/// kernels (cuda_kernels.cu). A plain header: nvcc includes it too.

namespace corockpt::example {

/// Adam's scalars for a param at one step, as PyTorch's single-tensor Adam computes them:
/// in double on the host, then rounded to float32.
struct AdamStepScalars {
  float step_size;
  float bias2_sqrt;
  float beta1;
  float beta2;
  float decay;
  float eps;
};

}  // namespace corockpt::example
