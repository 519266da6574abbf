// The return type is wrapped in Result<_, NotRun>, so it must be nameable.
#[locks::only_one(key = "x")]
fn monitor() -> impl std::fmt::Display {
    1
}

fn main() {}
