#[runq::test(scheduler = "scx_bpfland", scheduler = "scx_rustland")]
fn case(_ctx: &mut runq::test::Context) {}

fn main() {}
