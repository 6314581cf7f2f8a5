//! A lesion to add, from named text fields: the server's form parts and `lesion-indexer add
//! --image`'s flags both come here, so they accept and refuse the same input, naming the
//! field at fault. The values are checked against the slice by
//! [`crate::archive::lesion_record`].

use super::input::{parse_sex, parse_split, parse_type};
use crate::archive::LesionInput;
use crate::dataset::{NormalizedLocation, PixelBox};
use crate::error::{Error, Result};
use crate::imaging::WindowChoice;

/// The fields a lesion input may have, besides its image.
pub const LESION_FIELDS: [&str; 14] = [
    "box",
    "patient",
    "study",
    "series",
    "slice",
    "type",
    "sex",
    "age",
    "spacing_mm",
    "slice_interval_mm",
    "location",
    "report",
    "split",
    "window",
];

impl LesionInput {
    /// The input named text fields describe (`box`, `patient` and `study` required, the rest
    /// [`LesionInput::new`]'s defaults when absent or blank); an error names the field, and
    /// for an unknown one lists [`LESION_FIELDS`].
    pub fn from_fields(fields: &[(String, String)]) -> Result<LesionInput> {
        let fields = Fields(fields);
        fields.check_known()?;
        let bbox = fields
            .text("box")
            .ok_or_else(|| Error::invalid_argument("box", "required (x1,y1,x2,y2)"))?;
        let bbox = PixelBox::parse(bbox).map_err(|e| Error::invalid_argument("box", e))?;
        let required = |name: &str| -> Result<u32> {
            fields
                .number(name)?
                .ok_or_else(|| Error::invalid_argument(name, "required"))
        };
        let mut input = LesionInput::new(bbox, required("patient")?, required("study")?);
        if let Some(series) = fields.number("series")? {
            input.series = series;
        }
        if let Some(slice) = fields.number("slice")? {
            input.slice = slice;
        }
        input.spacing_mm = fields.number("spacing_mm")?;
        if let Some(interval) = fields.number("slice_interval_mm")? {
            input.slice_interval_mm = interval;
        }
        if let Some(t) = fields.text("location") {
            input.location = location(t)?;
        }
        if let Some(t) = fields.text("window") {
            input.window =
                Some(WindowChoice::parse(t).map_err(|e| Error::invalid_argument("window", e))?);
        }
        fields.describe(&mut input)?;
        Ok(input)
    }
}

/// Named text fields, the first of each name winning.
struct Fields<'a>(&'a [(String, String)]);

impl Fields<'_> {
    fn check_known(&self) -> Result<()> {
        match self
            .0
            .iter()
            .find(|(n, _)| !LESION_FIELDS.contains(&n.as_str()))
        {
            Some((name, _)) => Err(Error::invalid_argument(
                name.clone(),
                format!("unknown part (known: {})", LESION_FIELDS.join(", ")),
            )),
            None => Ok(()),
        }
    }

    /// The field's text, trimmed; blank is absent.
    fn text(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>> {
        self.text(name)
            .map(|t| {
                t.parse()
                    .map_err(|_| Error::invalid_argument(name, format!("`{t}` is not a number")))
            })
            .transpose()
    }

    /// What is known of the patient and the lesion: type, sex, age, split, report.
    fn describe(&self, input: &mut LesionInput) -> Result<()> {
        if let Some(t) = self.text("type") {
            input.coarse_type = parse_type(t, "type")?;
        }
        if let Some(t) = self.text("sex") {
            input.sex = parse_sex(t, "sex")?;
        }
        input.age = self.number("age")?;
        if let Some(t) = self.text("split") {
            input.split = parse_split(t, "split")?;
        }
        input.report = self.text("report").unwrap_or("").to_string();
        Ok(())
    }
}

/// `x,y,z`, three numbers.
fn location(text: &str) -> Result<NormalizedLocation> {
    let not_xyz = || Error::invalid_argument("location", format!("`{text}` is not x,y,z"));
    let v: Vec<f32> = text
        .split(',')
        .map(|p| p.trim().parse::<f32>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| not_xyz())?;
    let [x, y, z] = v[..] else {
        return Err(not_xyz());
    };
    Ok(NormalizedLocation { x, y, z })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{CoarseType, Sex};

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_bad_field_is_named() {
        let base = [("box", "10,10,40,40"), ("patient", "7"), ("study", "1")];
        let refused = |extra: &[(&str, &str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            LesionInput::from_fields(&fields(&all))
                .unwrap_err()
                .to_string()
        };
        assert!(refused(&[("colour", "red")]).starts_with("colour: unknown part (known: box,"));
        assert_eq!(refused(&[("age", "forty")]), "age: `forty` is not a number");
        assert_eq!(
            refused(&[("location", "1,2")]),
            "location: `1,2` is not x,y,z"
        );
        assert!(refused(&[("type", "brain")]).starts_with("type: `brain` is not a coarse type"));
        assert!(refused(&[("sex", "x")]).starts_with("sex: `x` is not F, M or unknown"));
        assert!(refused(&[("window", "nonsense")]).starts_with("window: "));
        let missing = LesionInput::from_fields(&fields(&base[..2])).unwrap_err();
        assert_eq!(missing.to_string(), "study: required");
        let inverted = LesionInput::from_fields(&fields(&[("box", "40,40,10,10")])).unwrap_err();
        assert!(inverted
            .to_string()
            .starts_with("box: box 40,40,10,10 is empty"));
    }

    #[test]
    fn absent_and_blank_fields_keep_the_defaults() {
        let input = LesionInput::from_fields(&fields(&[
            ("box", "10,10,40,40"),
            ("patient", "7"),
            ("study", "2"),
            ("sex", " "),
            ("type", "lung"),
            ("sex", "F"),
        ]))
        .unwrap();
        assert_eq!((input.patient, input.study, input.series), (7, 2, 1));
        assert_eq!(input.coarse_type, CoarseType::Lung);
        assert_eq!(input.sex, Sex::Unknown, "the first field of a name wins");
        assert_eq!(input.report, "");
    }
}
