// A task served elsewhere is known by its Celery name only.
#[celeriac::task(remote)]
fn run_calwebb_detector1(input_file: String, short_name: String) -> Vec<String>;

fn main() {}
