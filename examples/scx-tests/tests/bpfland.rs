//! scx_bpfland under a topology gauntlet (filled in below).

fn main() {
    runq::test::main()
}
