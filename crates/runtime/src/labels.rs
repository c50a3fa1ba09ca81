//! Metric label values as enums, resolved to their series once.
//!
//! Prometheus labels must come from a bounded set; an enum makes the set the
//! compiler's business, not a reviewer's. Resolving every value to its child
//! series when the metrics are registered also means a request never hashes
//! label strings to count itself, and every series exists (at 0) from the
//! first scrape, so `rate()` over it is defined before the first event.

use std::marker::PhantomData;

/// A bounded set of label values.
pub trait LabelValue: Copy + 'static {
    /// Every value, in declaration order.
    const ALL: &'static [Self];
    /// The text of this value in the exposition.
    fn as_str(self) -> &'static str;
    /// The position of this value in [`ALL`](Self::ALL).
    fn index(self) -> usize;
}

/// Declares an enum of label values: each variant with its text.
///
/// ```ignore
/// label_values! {
///     /// Why a request was refused.
///     pub enum Rejection {
///         /// Not JSON-RPC.
///         Malformed => "malformed",
///     }
/// }
/// ```
#[macro_export]
macro_rules! label_values {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $crate::labels::LabelValue for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];

            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            fn index(self) -> usize {
                self as usize
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($crate::labels::LabelValue::as_str(*self))
            }
        }
    };
}

/// One child series per value of `L`, resolved up front.
#[derive(Clone, Debug)]
pub struct ByLabel<L, M> {
    series: Vec<M>,
    _label: PhantomData<L>,
}

impl<L: LabelValue, M> ByLabel<L, M> {
    /// Resolves every value of `L` with `child` (e.g.
    /// `|l| vec.with_label_values(&[l])`).
    pub fn new(mut child: impl FnMut(&'static str) -> M) -> Self {
        ByLabel {
            series: L::ALL.iter().map(|l| child(l.as_str())).collect(),
            _label: PhantomData,
        }
    }

    /// The series of `label`.
    pub fn get(&self, label: L) -> &M {
        &self.series[label.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    label_values! {
        enum Colour {
            Red => "red",
            Green => "green",
        }
    }

    #[test]
    fn each_value_has_its_own_series_in_order() {
        assert_eq!(Colour::ALL, &[Colour::Red, Colour::Green]);
        let by = ByLabel::<Colour, String>::new(|l| format!("series {l}"));
        assert_eq!(by.get(Colour::Green), "series green");
        assert_eq!(by.get(Colour::Red), "series red");
    }
}
