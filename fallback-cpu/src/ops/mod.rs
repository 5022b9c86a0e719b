//! f32 activation kernels.
