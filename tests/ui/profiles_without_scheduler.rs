#[runq::test(profiles = { default = [], lowlat = ["--lowlatency"] })]
fn case(_ctx: &mut runq::test::Context) {}

fn main() {}
