//! `k3s-standin`: edgeforge's STAND-IN for the k3s binary, for tests only
//! (see `edgeforge_tests::k3s_standin`). Install it as `k3s` (with
//! `kubectl`, `crictl` and `ctr` symlinks): it dispatches on `argv[0]`.

fn main() {
    let code = edgeforge_tests::k3s_standin::main(std::env::args().collect());
    std::process::exit(code);
}
