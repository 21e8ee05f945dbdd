// libtorch's convolution and batch-norm gradients for Kiln, through a C interface Rust can
// call.
//
// at::convolution_backward and at::native_batch_norm_backward are what PyTorch's autograd runs
// for a convolution and a batch norm: they pick the same kernels (oneDNN, cuDNN, ATen's fused
// CPU batch norm) as `loss.backward()` in PyTorch. tch does not expose them, so this file does,
// taking and returning the `at::Tensor*` handles tch's tensors wrap.
#include <ATen/core/Tensor.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/native_batch_norm_backward.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>

extern "C" {

// Computes the gradients of a 2-D convolution that `need_input` and `need_weight` ask for,
// storing new tensors in `*grad_input` / `*grad_weight` (to be freed by tch). Returns null, or
// an error message (free it with kiln_tch_free_error) if libtorch threw.
char *kiln_tch_conv2d_backward(const at::Tensor *grad_output, const at::Tensor *input,
                               const at::Tensor *weight, const int64_t *stride,
                               const int64_t *padding, const int64_t *dilation, int64_t groups,
                               int need_input, int need_weight, at::Tensor **grad_input,
                               at::Tensor **grad_weight) {
  try {
    const int64_t no_output_padding[2] = {0, 0};
    auto grads = at::convolution_backward(
        *grad_output, *input, *weight, c10::nullopt, at::IntArrayRef(stride, 2),
        at::IntArrayRef(padding, 2), at::IntArrayRef(dilation, 2), /*transposed=*/false,
        at::IntArrayRef(no_output_padding, 2), groups,
        std::array<bool, 3>{need_input != 0, need_weight != 0, false});
    if (need_input) *grad_input = new at::Tensor(std::get<0>(grads));
    if (need_weight) *grad_weight = new at::Tensor(std::get<1>(grads));
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}

// The gradients of input, weight and bias of a training-mode batch norm, given what
// at::native_batch_norm returned for it (`save_mean`, `save_invstd`), stored as new tensors in
// the three out-pointers. Returns null, or an error message as above.
char *kiln_tch_batch_norm_backward(const at::Tensor *grad_output, const at::Tensor *input,
                                   const at::Tensor *weight, const at::Tensor *save_mean,
                                   const at::Tensor *save_invstd, double eps,
                                   at::Tensor **grad_input, at::Tensor **grad_weight,
                                   at::Tensor **grad_bias) {
  try {
    auto grads = at::native_batch_norm_backward(
        *grad_output, *input, *weight, /*running_mean=*/c10::nullopt,
        /*running_var=*/c10::nullopt, *save_mean, *save_invstd, /*train=*/true, eps,
        std::array<bool, 3>{true, true, true});
    *grad_input = new at::Tensor(std::get<0>(grads));
    *grad_weight = new at::Tensor(std::get<1>(grads));
    *grad_bias = new at::Tensor(std::get<2>(grads));
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}

void kiln_tch_free_error(char *message) { std::free(message); }
}
