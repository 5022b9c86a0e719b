//! A monotonic clock for generation statistics. Natively it is `std::time::Instant`; on wasm32
//! `Instant::now` panics (there is no OS clock), so there it reads the host's
//! `performance.now()`, which browsers and Node both provide.

#[cfg(not(target_arch = "wasm32"))]
pub use std::time::Instant;

#[cfg(target_arch = "wasm32")]
pub use web::Instant;

#[cfg(target_arch = "wasm32")]
mod web {
    use std::time::Duration;

    use wasm_bindgen::prelude::wasm_bindgen;

    #[wasm_bindgen]
    extern "C" {
        /// Milliseconds since the page (or Node process) started, sub-millisecond resolution.
        #[wasm_bindgen(js_namespace = performance, js_name = now)]
        fn performance_now() -> f64;
    }

    /// A point in time, in milliseconds of `performance.now()`.
    #[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
    pub struct Instant(f64);

    impl Instant {
        pub fn now() -> Instant {
            Instant(performance_now())
        }

        /// Time since `self`.
        pub fn elapsed(&self) -> Duration {
            Instant::now() - *self
        }
    }

    impl std::ops::Sub for Instant {
        type Output = Duration;

        /// Saturates at zero, like `std::time::Instant`.
        fn sub(self, earlier: Instant) -> Duration {
            Duration::from_secs_f64(((self.0 - earlier.0) / 1000.0).max(0.0))
        }
    }
}
