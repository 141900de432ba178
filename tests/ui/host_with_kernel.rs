#[runq::test(host = true, kernel = "sched_ext")]
fn case(_ctx: &mut runq::test::Context) {}

fn main() {}
