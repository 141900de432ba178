#[runq::test(duration = "5 parsecs")]
fn case(_ctx: &mut runq::test::Context) {}

fn main() {}
