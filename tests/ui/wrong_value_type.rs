#[runq::test(host = "yes")]
fn case(_ctx: &mut runq::test::Context) {}

fn main() {}
