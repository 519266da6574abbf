// A Python exception class lives in a module.
#[derive(Debug, celeriac::Exception)]
#[exception(name = "CalibrationError")]
struct CalibrationFailed;

impl std::fmt::Display for CalibrationFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("calibration failed")
    }
}

fn main() {}
