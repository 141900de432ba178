#[runq::test(topology = "1n1l2c1t", gauntlet = ["1n2l2c1t"])]
fn case(_ctx: &mut runq::test::Context) {}

fn main() {}
