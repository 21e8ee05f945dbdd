// libtorch's convolution gradients for Kiln, through a C interface Rust can call.
//
// at::convolution_backward is what PyTorch's autograd runs for a convolution: it picks the
// same kernel (oneDNN, cuDNN, ...) as `loss.backward()` in PyTorch. tch does not expose it,
// so this file does, taking and returning the `at::Tensor*` handles tch's tensors wrap.
#include <ATen/core/Tensor.h>
#include <ATen/ops/convolution_backward.h>

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

void kiln_tch_free_error(char *message) { std::free(message); }
}
