#[runq::test(topology = "1n1l2c1t", cpus = "4")]
fn case(_ctx: &mut runq::test::Context) {}

fn main() {}
