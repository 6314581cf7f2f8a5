//! Parsing of the field formats `DL_info.csv` uses: quoted lists of comma-separated numbers.

pub use crate::util::{number, numbers};

/// One non-negative integer.
pub fn integer(text: &str) -> Result<u32, String> {
    let t = text.trim();
    t.parse::<u32>().map_err(|_| {
        if t.is_empty() {
            "empty, expected a whole number".to_string()
        } else {
            format!("`{t}` is not a non-negative whole number")
        }
    })
}

/// Writes numbers the way `DL_info.csv` does: `a, b, c` with the shortest exact form.
pub fn join_numbers(values: &[f32]) -> String {
    values
        .iter()
        .map(|v| format_number(*v))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn format_number(v: f32) -> String {
    if v == v.trunc() && v.abs() < 1e7 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_lists() {
        assert_eq!(numbers::<2>("11.9677, 5.10387"), Ok([11.9677, 5.10387]));
        assert_eq!(numbers::<3>(" 1,2 ,3 "), Ok([1.0, 2.0, 3.0]));
    }

    #[test]
    fn names_what_is_wrong() {
        assert!(numbers::<4>("1, 2, 3").unwrap_err().contains("expected 4"));
        assert!(numbers::<2>("1, x")
            .unwrap_err()
            .contains("`x` is not a number"));
        assert!(numbers::<2>("1, inf").unwrap_err().contains("not a finite"));
        assert!(integer("-3").unwrap_err().contains("non-negative"));
    }

    #[test]
    fn formats_like_the_original_table() {
        assert_eq!(join_numbers(&[-175.0, 275.0]), "-175, 275");
        assert_eq!(
            join_numbers(&[0.488281, 0.488281, 5.0]),
            "0.488281, 0.488281, 5"
        );
    }
}
