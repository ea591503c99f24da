//! Statistical process control: what quality engineers read off control
//! charts, computed on the stream or over a file.
//!
//! - [`constants`]: d2, d3, c4 and the chart factors, from first principles;
//! - [`rules`]: the Western Electric and Nelson run rules, streaming, each
//!   violation naming its rule and the points that make it;
//! - [`chart`]: X̄–R, X̄–S, I–MR, p, np, c, u, EWMA and CUSUM charts, Phase I
//!   and Phase II;
//! - [`capability`]: Cp, Cpk, Pp, Ppk, Cpm with intervals, expected ppm and
//!   an Anderson–Darling normality check;
//! - [`hotelling`]: multivariate Hotelling T² charts (individuals and subgroups)
//!   with per-characteristic contributions.

pub mod capability;
pub mod chart;
pub mod constants;
pub mod hotelling;
pub mod rules;
