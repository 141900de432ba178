#[runq::test(gauntlet = "huge")]
fn case(_ctx: &mut runq::test::Context) {}

fn main() {}
