#[runq::test(gauntlet = ["1n1l2c1t", "1n2l2c"])]
fn case(_ctx: &mut runq::test::Context) {}

fn main() {}
