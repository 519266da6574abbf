// The lock needs a name.
#[locks::only_one(timeout = 30)]
fn monitor() {}

fn main() {}
