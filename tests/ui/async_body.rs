#[runq::test(topology = "1n1l2c1t")]
async fn case(_ctx: &mut runq::test::Context) {}

fn main() {}
