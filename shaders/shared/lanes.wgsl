// The invocation's place in its workgroup, passed to `main` as one struct so that the reduction
// helpers work the same with and without subgroups. No subgroup size is assumed: subgroup_size
// may be 4, 8, 16, 32, 64 or 128, and the last subgroup of a workgroup may be partial.
struct Lanes {
    @builtin(local_invocation_index) index: u32,
#ifdef SUBGROUP
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) n_sg: u32,
#endif
}
