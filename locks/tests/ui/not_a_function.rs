// The attribute guards functions only.
#[locks::only_one(key = "x")]
struct Monitor;

fn main() {}
