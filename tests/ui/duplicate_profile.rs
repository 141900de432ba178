#[runq::test(scheduler = "scx_bpfland", profiles = { fast = [], fast = ["--lowlatency"] })]
fn case(_ctx: &mut runq::test::Context) {}

fn main() {}
