// A skipped run is not a value: the result must be looked at.
#[locks::only_one(key = "x")]
fn count() -> u32 {
    1
}

fn main() {
    let n: u32 = count();
}
