//! Ops: one module per kernel family. Each op names its kernel variant with a typed key, checks
//! the shapes it is given, and records dispatches on a [`crate::gpu::Recorder`]; the dispatch
//! math reads workgroup and tile sizes from the variant's spec, never from a second copy.

pub mod activation;
pub mod attention;
pub mod elementwise;
pub mod gemv;
pub mod gemv_gated;
pub mod gemv_prep;
pub mod int8;
pub mod matmul;
pub mod matmul_q;
pub mod norm;
pub mod prep;
pub mod reduce;
pub mod rope;
pub mod rope_kv;
pub mod rwkv;
pub mod sample;
pub mod softmax;
pub mod ssm;
pub mod unary;

use crate::error::{Error, Result};
use crate::gpu::View;

/// Fails unless `view` holds at least `bytes` bytes.
pub(crate) fn need(op: &'static str, name: &str, view: &View<'_>, bytes: u64) -> Result<()> {
    if view.size < bytes {
        return Err(Error::Shape {
            op,
            detail: format!("`{name}` holds {} bytes, needs {bytes}", view.size),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::gpu::kernels::KERNELS;
    use crate::gpu::{DType, KernelFeatures, KernelKey, KernelSpec, ParamSpace};
    use crate::ops::activation::{Act, add_inplace_key, gated_key};
    use crate::ops::attention::{
        KvType, MAX_HEAD_DIM, attention_combine_key, attention_flash_key, attention_key,
        kv_store_key,
    };
    use crate::ops::elementwise::{BinaryOp, binary_key};
    use crate::ops::gemv::{ActQuant, IntDot, Split, WType, embed_key, gemv_key, gemv_q8_key};
    use crate::ops::gemv_gated::gemv_gated_key;
    use crate::ops::gemv_prep::gemv_prep_key;
    use crate::ops::int8::{gemv_w8a8_key, quantize_row_key};
    use crate::ops::matmul::{matmul_key, matmul_tiled_key};
    use crate::ops::matmul_q::matmul_q_key;
    use crate::ops::norm::{layer_norm_key, rms_norm_key};
    use crate::ops::prep::prep_key;
    use crate::ops::reduce::{Combine, ReduceOp, reduce_key};
    use crate::ops::rope::{RopeLayout, rope_key};
    use crate::ops::rope_kv::rope_kv_key;
    use crate::ops::rwkv::{FfnAct, ffn_act_key, token_shift_key, wkv6_key, wkv7_key};
    use crate::ops::sample::{argmax_key, sample_key};
    use crate::ops::softmax::softmax_key;
    use crate::ops::ssm::{ssm_conv_key, ssm_scan_key};
    use crate::ops::unary::{UnaryOp, axpy_key, unary_key};
    use crate::tune::{GemvOp, GemvPick};

    /// Every key an op builds on a device with `caps`: the choices `Combine::best`,
    /// `IntDot::best` and `Split::best` can make there (and their overrides), f16 storage, f16
    /// weights and f16 KV caches only with SHADER_F16 (as `AttnOptions::for_gpu`), and every
    /// argument the callers can pass.
    fn keys(caps: KernelFeatures) -> Vec<KernelKey> {
        let combines: Vec<Combine> = std::iter::once(Combine::SharedMemory)
            .chain(caps.subgroup.then_some(Combine::Subgroup))
            .collect();
        let splits: Vec<Split> = combines
            .iter()
            .map(|&c| Split::Group(c))
            .chain([Split::Thread])
            .collect();
        let dots: Vec<IntDot> = std::iter::once(IntDot::Unpacked)
            .chain(caps.dot4.then_some(IntDot::Packed))
            .collect();
        let dtypes: Vec<DType> = std::iter::once(DType::F32)
            .chain(caps.f16.then_some(DType::F16))
            .collect();
        let kvs: Vec<KvType> = std::iter::once(KvType::F32)
            .chain(caps.f16.then_some(KvType::F16))
            .collect();
        let bools = [false, true];
        let acts = [Act::Silu, Act::Gelu];
        let layouts = [RopeLayout::Norm, RopeLayout::Neox];

        let mut keys = vec![
            add_inplace_key(),
            attention_combine_key(),
            sample_key(),
            ssm_conv_key(),
            ssm_scan_key(),
            token_shift_key(),
            wkv6_key(),
            wkv7_key(),
            ffn_act_key(FfnAct::ReluSq),
            ffn_act_key(FfnAct::SigmoidGate),
        ];
        keys.extend(acts.map(gated_key));
        keys.extend(layouts.map(rope_key));
        for &kv in &kvs {
            keys.push(kv_store_key(kv));
            keys.extend(layouts.map(|layout| rope_kv_key(layout, kv)));
            for split in bools {
                for head_dim in (2..=MAX_HEAD_DIM).step_by(2) {
                    keys.push(attention_flash_key(kv, head_dim, split));
                }
            }
            keys.extend(combines.iter().map(|&c| attention_key(c, kv)));
        }
        for &c in &combines {
            keys.extend([
                rms_norm_key(c),
                layer_norm_key(c),
                softmax_key(c),
                argmax_key(c),
                quantize_row_key(c),
                reduce_key(ReduceOp::Sum, c),
                reduce_key(ReduceOp::Max, c),
            ]);
        }
        for trans_b in bools {
            keys.push(matmul_key(trans_b));
            keys.extend(dtypes.iter().map(|&d| matmul_tiled_key(d, trans_b)));
        }
        let unary = [
            UnaryOp::Silu,
            UnaryOp::GeluTanh,
            UnaryOp::GeluErf,
            UnaryOp::Sigmoid,
            UnaryOp::Tanh,
            UnaryOp::Scale(2.0),
        ];
        for &d in &dtypes {
            for vec4 in bools {
                keys.push(axpy_key(d, vec4));
                keys.extend([BinaryOp::Add, BinaryOp::Mul].map(|op| binary_key(op, d, vec4)));
                keys.extend(unary.map(|op| unary_key(op, d, vec4)));
            }
        }
        keys.extend(
            [
                None,
                Some(ActQuant::Q8_0),
                Some(ActQuant::Q8_1),
                Some(ActQuant::Q8K),
            ]
            .map(prep_key),
        );
        for &split in &splits {
            keys.extend(dots.iter().map(|&dot| gemv_w8a8_key(split, dot)));
        }
        for wtype in WType::ALL
            .into_iter()
            .filter(|&w| caps.f16 || w != WType::F16)
        {
            let int8 = ActQuant::for_weights(wtype).is_some();
            keys.push(embed_key(wtype));
            for acc in bools {
                keys.push(matmul_q_key(wtype, false, acc));
                if int8 {
                    keys.push(matmul_q_key(wtype, true, acc));
                }
            }
            for &split in &splits {
                keys.extend(acts.map(|act| gemv_gated_key(wtype, act, split)));
                for acc in bools {
                    keys.extend(dtypes.iter().map(|&d| gemv_key(wtype, d, split, acc)));
                }
                if !int8 {
                    continue;
                }
                for &dot in &dots {
                    for wg in GemvOp::Q8.wg_sizes() {
                        let pick = GemvPick { split, dot, wg };
                        keys.extend(bools.map(|acc| gemv_q8_key(wtype, pick, acc)));
                    }
                    keys.extend(
                        [None, Some(Act::Silu), Some(Act::Gelu)]
                            .map(|gated| gemv_prep_key(wtype, split, dot, gated)),
                    );
                }
            }
        }
        keys
    }

    /// What the manifest says one parameter of a `kernel` key (`NAME=value`) needs.
    fn needs(kernel: &str, param: &str) -> KernelFeatures {
        let (name, value) = param.split_once('=').unwrap();
        ParamSpace::of(kernel)
            .flat_map(|line| line.values(name))
            .find(|v| v.value == value)
            .unwrap_or_else(|| panic!("{kernel}: {param} is in no manifest line"))
            .needs
    }

    #[test]
    fn every_key_the_ops_build_is_generated_and_fits_the_device() {
        let mut built = std::collections::BTreeSet::new();
        for bits in 0..8u8 {
            let caps = KernelFeatures {
                f16: bits & 1 != 0,
                subgroup: bits & 2 != 0,
                dot4: bits & 4 != 0,
            };
            for key in keys(caps) {
                let spec = KernelSpec::find(&key).unwrap_or_else(|e| panic!("{caps:?}: {e}"));
                let needed = spec.key.split(',').map(|p| needs(spec.name, p)).fold(
                    KernelFeatures {
                        f16: false,
                        subgroup: false,
                        dot4: false,
                    },
                    |a, b| KernelFeatures {
                        f16: a.f16 || b.f16,
                        subgroup: a.subgroup || b.subgroup,
                        dot4: a.dot4 || b.dot4,
                    },
                );
                assert_eq!(needed, spec.features, "{}", spec.id());
                assert!(
                    (!needed.f16 || caps.f16)
                        && (!needed.subgroup || caps.subgroup)
                        && (!needed.dot4 || caps.dot4),
                    "{caps:?} builds {}, which needs {needed:?}",
                    spec.id()
                );
                built.insert(spec.id());
            }
        }
        let unbuilt: Vec<String> = KERNELS
            .iter()
            .map(KernelSpec::id)
            .filter(|id| !built.contains(id))
            .collect();
        assert!(unbuilt.is_empty(), "variants no op builds: {unbuilt:?}");
    }
}
