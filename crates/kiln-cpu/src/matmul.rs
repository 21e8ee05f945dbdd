//! Matrix products on the `gemm` crate over strided views of slices: the one place Kiln calls
//! gemm's unsafe entry point, with the bounds it needs checked first.

use gemm::{gemm, Parallelism};

/// `rows x cols` elements of a slice, element `(r, c)` at `r * strides[0] + c * strides[1]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    strides: [usize; 2],
}

impl<'a> View<'a> {
    pub(crate) fn new(data: &'a [f32], [rows, cols]: [usize; 2], strides: [usize; 2]) -> Self {
        let view = View {
            data,
            rows,
            cols,
            strides,
        };
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * strides[0] + (cols - 1) * strides[1];
            assert!(
                last < data.len(),
                "matmul: a {rows}x{cols} view with strides {strides:?} reaches past {} elements",
                data.len()
            );
        }
        view
    }

    /// A row-major matrix.
    pub(crate) fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View::new(data, [rows, cols], [cols, 1])
    }

    /// The transpose of the row-major `cols x rows` matrix in `data`.
    pub(crate) fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View::new(data, [rows, cols], [1, rows])
    }
}

/// `dst (m x n, row-major) = a (m x k) · b (k x n)`, or `dst += ...` when `accumulate`. On the
/// calling thread only: callers split the work themselves, by shapes, so that every element is
/// summed the same way whatever the thread count.
pub(crate) fn matmul(dst: &mut [f32], a: View, b: View, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: inner dimensions differ");
    assert!(
        dst.len() >= m * n,
        "matmul: destination shorter than {m}x{n}"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: `View::new` checked that every element either view reaches lies in its slice,
    // `dst` holds the m x n result densely (asserted) and, borrowed mutably, aliases neither.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.strides[1] as isize,
            a.strides[0] as isize,
            b.data.as_ptr(),
            b.strides[1] as isize,
            b.strides[0] as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}
