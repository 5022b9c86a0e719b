// The KV cache's element pair, chosen by the variant's KV parameter. KV=f16: two f16 packed in a
// u32, rounded to nearest-even by kiln (shared/f16.wgsl), with q and the softmax weights rounded
// to f16 before they meet it as llama.cpp does. KV=f32: two f32, and nothing is rounded.
#import f16

#ifdef KV_F32
alias KvPair = vec2<f32>;

fn kv_pack(v: vec2<f32>) -> KvPair {
    return v;
}

fn kv_unpack(x: KvPair) -> vec2<f32> {
    return x;
}

fn kv_round(v: f32) -> f32 {
    return v;
}

fn kv_round2(v: vec2<f32>) -> vec2<f32> {
    return v;
}
#else
alias KvPair = u32;

fn kv_pack(v: vec2<f32>) -> KvPair {
    return pack2x16float(f16_round2(v));
}

fn kv_unpack(x: KvPair) -> vec2<f32> {
    return unpack2x16float(x);
}

fn kv_round(v: f32) -> f32 {
    return f16_round(v);
}

fn kv_round2(v: vec2<f32>) -> vec2<f32> {
    return f16_round2(v);
}
#endif
