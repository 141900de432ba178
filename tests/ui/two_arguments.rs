#[runq::test(topology = "1n1l2c1t")]
fn case(_ctx: &mut runq::test::Context, _extra: u32) {}

fn main() {}
