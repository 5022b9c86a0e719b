//! ggml tensor element types: ids as stored in GGUF, block sizes and bytes per block.

use super::GgufError;

macro_rules! ggml_types {
    ($($name:ident = $id:literal, $block:literal, $bytes:literal;)*) => {
        /// A ggml tensor element type, with the id GGUF stores for it.
        ///
        /// Quantized types pack `block_size()` elements into `type_size()` bytes.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types, reason = "ggml's own names, as GGUF tools print them")]
        pub enum GgmlType {
            $(
                #[doc = concat!("ggml type id ", stringify!($id), ": ", stringify!($block),
                                " elements in ", stringify!($bytes), " bytes.")]
                $name = $id,
            )*
        }

        impl GgmlType {
            /// Every known type, in id order.
            pub const ALL: &[GgmlType] = &[$(GgmlType::$name),*];

            /// The type with this GGUF id, if ggml defines one.
            pub fn from_id(id: u32) -> Option<GgmlType> {
                match id {
                    $($id => Some(GgmlType::$name),)*
                    _ => None,
                }
            }

            /// Elements per block (1 for plain types).
            pub fn block_size(self) -> u64 {
                match self { $(GgmlType::$name => $block,)* }
            }

            /// Bytes per block.
            pub fn type_size(self) -> u64 {
                match self { $(GgmlType::$name => $bytes,)* }
            }

            /// The name ggml and gguf-py use for this type, e.g. `Q4_K`.
            pub fn name(self) -> &'static str {
                match self { $(GgmlType::$name => stringify!($name),)* }
            }
        }
    };
}

ggml_types! {
    F32 = 0, 1, 4;
    F16 = 1, 1, 2;
    Q4_0 = 2, 32, 18;
    Q4_1 = 3, 32, 20;
    Q5_0 = 6, 32, 22;
    Q5_1 = 7, 32, 24;
    Q8_0 = 8, 32, 34;
    Q8_1 = 9, 32, 40;
    Q2_K = 10, 256, 84;
    Q3_K = 11, 256, 110;
    Q4_K = 12, 256, 144;
    Q5_K = 13, 256, 176;
    Q6_K = 14, 256, 210;
    Q8_K = 15, 256, 292;
    IQ2_XXS = 16, 256, 66;
    IQ2_XS = 17, 256, 74;
    IQ3_XXS = 18, 256, 98;
    IQ1_S = 19, 256, 50;
    IQ4_NL = 20, 32, 18;
    IQ3_S = 21, 256, 110;
    IQ2_S = 22, 256, 82;
    IQ4_XS = 23, 256, 136;
    I8 = 24, 1, 1;
    I16 = 25, 1, 2;
    I32 = 26, 1, 4;
    I64 = 27, 1, 8;
    F64 = 28, 1, 8;
    IQ1_M = 29, 256, 56;
    BF16 = 30, 1, 2;
    TQ1_0 = 34, 256, 54;
    TQ2_0 = 35, 256, 66;
    MXFP4 = 39, 32, 17;
    NVFP4 = 40, 64, 36;
    Q1_0 = 41, 128, 18;
}

impl GgmlType {
    /// Whether kiln has kernels for this type: F32, F16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K.
    pub fn is_supported(self) -> bool {
        matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q8_0
                | GgmlType::Q4_K
                | GgmlType::Q6_K
        )
    }

    /// Bytes taken by a row of `n` elements; `n` must be a whole number of blocks.
    pub fn row_bytes(self, n: u64) -> Result<u64, GgufError> {
        let block = self.block_size();
        if !n.is_multiple_of(block) {
            return Err(GgufError::RowNotBlockAligned {
                ty: self.name(),
                n,
                block,
            });
        }
        (n / block)
            .checked_mul(self.type_size())
            .ok_or(GgufError::SizeOverflow {
                what: format!("a {} row of {n} elements", self.name()),
            })
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
