//! The calls into `src/aten.cpp`.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

use tch::Tensor;

unsafe extern "C" {
    fn kiln_tch_conv2d_backward(
        grad_output: *const c_void,
        input: *const c_void,
        weight: *const c_void,
        stride: *const i64,
        padding: *const i64,
        dilation: *const i64,
        groups: i64,
        need_input: c_int,
        need_weight: c_int,
        grad_input: *mut *mut c_void,
        grad_weight: *mut *mut c_void,
    ) -> *mut c_char;
    fn kiln_tch_batch_norm_backward(
        grad_output: *const c_void,
        input: *const c_void,
        weight: *const c_void,
        save_mean: *const c_void,
        save_invstd: *const c_void,
        eps: f64,
        grad_input: *mut *mut c_void,
        grad_weight: *mut *mut c_void,
        grad_bias: *mut *mut c_void,
    ) -> *mut c_char;
    fn kiln_tch_free_error(message: *mut c_char);
}

/// Panics with libtorch's message if the shim reported one (as burn-tch does for any libtorch
/// error).
fn check(error: *mut c_char, function: &str) {
    if !error.is_null() {
        // SAFETY: a NUL-terminated message the shim allocated; freed right after copying.
        let message = unsafe { CStr::from_ptr(error) }
            .to_string_lossy()
            .into_owned();
        unsafe { kiln_tch_free_error(error) };
        panic!("libtorch's {function} failed: {message}");
    }
}

/// Takes over a tensor the shim made.
fn take(tensor: *mut c_void, function: &str) -> Tensor {
    assert!(
        !tensor.is_null(),
        "libtorch's {function} returned no gradient"
    );
    // SAFETY: a heap `at::Tensor` the shim made with `new`, which tch takes over and frees.
    unsafe { Tensor::from_ptr(tensor.cast()) }
}

/// A 2-D convolution's geometry, as libtorch takes it.
pub struct Conv2d {
    pub stride: [i64; 2],
    pub padding: [i64; 2],
    pub dilation: [i64; 2],
    pub groups: i64,
}

/// Which gradient to compute.
#[derive(Clone, Copy, PartialEq)]
pub enum Grad {
    Input,
    Weight,
}

/// The input or weight gradient of `conv2d(input, weight)` given the output's gradient, by
/// `at::convolution_backward`. Panics with libtorch's message if libtorch throws (as burn-tch
/// does for any libtorch error).
pub fn conv2d_backward(
    grad_output: &Tensor,
    input: &Tensor,
    weight: &Tensor,
    conv: &Conv2d,
    grad: Grad,
) -> Tensor {
    let mut grad_input: *mut c_void = ptr::null_mut();
    let mut grad_weight: *mut c_void = ptr::null_mut();
    // SAFETY: the tensor handles are live `at::Tensor*` (what tch's `as_ptr` returns), the
    // arrays hold two elements each, and the shim writes only the gradients asked for.
    let error = unsafe {
        kiln_tch_conv2d_backward(
            grad_output.as_ptr().cast(),
            input.as_ptr().cast(),
            weight.as_ptr().cast(),
            conv.stride.as_ptr(),
            conv.padding.as_ptr(),
            conv.dilation.as_ptr(),
            conv.groups,
            c_int::from(grad == Grad::Input),
            c_int::from(grad == Grad::Weight),
            &mut grad_input,
            &mut grad_weight,
        )
    };
    check(error, "convolution_backward");
    let out = if grad == Grad::Input {
        grad_input
    } else {
        grad_weight
    };
    take(out, "convolution_backward")
}

/// The gradients of input, weight and bias of a training-mode batch norm, by
/// `at::native_batch_norm_backward`, given what `native_batch_norm` saved for it.
pub fn batch_norm_backward(
    grad_output: &Tensor,
    input: &Tensor,
    weight: &Tensor,
    save_mean: &Tensor,
    save_invstd: &Tensor,
    eps: f64,
) -> [Tensor; 3] {
    let mut grads: [*mut c_void; 3] = [ptr::null_mut(); 3];
    let [gi, gw, gb] = &mut grads;
    // SAFETY: live `at::Tensor*` handles in, three out-pointers the shim fills on success.
    let error = unsafe {
        kiln_tch_batch_norm_backward(
            grad_output.as_ptr().cast(),
            input.as_ptr().cast(),
            weight.as_ptr().cast(),
            save_mean.as_ptr().cast(),
            save_invstd.as_ptr().cast(),
            eps,
            gi,
            gw,
            gb,
        )
    };
    check(error, "native_batch_norm_backward");
    grads.map(|g| take(g, "native_batch_norm_backward"))
}
