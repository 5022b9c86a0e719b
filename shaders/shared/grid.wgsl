// Flat workgroup index for 1-D work spread over a 2-D grid (one grid dimension holds at most
// 65535 workgroups; the runtime splits larger counts into x * y).
fn flat_workgroup(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.y * nwg.x + wg.x;
}
