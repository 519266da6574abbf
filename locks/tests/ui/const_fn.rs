// Taking a lock is I/O: not in a const fn.
#[locks::only_one(key = "x")]
const fn monitor() {}

fn main() {}
