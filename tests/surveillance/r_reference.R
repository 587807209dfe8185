# Reference results of R's surveillance package for tests/surveillance/test_surveillance_r.py.
# Usage: Rscript r_reference.R OUT.json
suppressMessages(library(surveillance))
args <- commandArgs(trailingOnly = TRUE)
data("salmNewport"); data("ha.sts")
na0 <- function(x) { x <- as.matrix(x); x[] <- as.numeric(x); x }
pack <- function(res, range, extra = list()) {
  out <- list(range = range, upperbound = na0(upperbound(res)), alarm = na0(alarms(res)))
  c(out, extra)
}
ff <- function(sts, ctl) {
  res <- farringtonFlexible(sts, control = c(ctl, list(glmWarnings = FALSE)))
  pack(res, ctl$range, list(expected = na0(res@control$expected), score = na0(res@control$score)))
}
ears <- function(sts, ctl) {
  res <- earsC(sts, control = ctl)
  pack(res, res@control$range)
}
cus <- function(sts, ctl) {
  res <- cusum(sts, control = ctl)
  pack(res, ctl$range)
}
salmTot <- aggregate(salmNewport, by = "unit")
out <- list(
  salm = list(observed = na0(observed(salmNewport)), dates = as.character(epoch(salmNewport))),
  ha = list(observed = na0(observed(ha.sts))),
  cases = list(
    ears_c1 = ears(salmNewport, list(method = "C1")),
    ears_c2 = ears(salmNewport, list(method = "C2")),
    ears_c3 = ears(salmNewport, list(method = "C3")),
    ears_c1_b10 = ears(salmNewport, list(method = "C1", baseline = 10, minSigma = 0.5, alpha = 0.01)),
    ears_c3_ha = ears(ha.sts, list(method = "C3", baseline = 5, minSigma = 1)),
    ff_default = ff(salmNewport, list(range = 400:528)),
    ff_farrington = ff(salmNewport, list(range = 400:528, b = 5, w = 3, noPeriods = 1, weightsThreshold = 1,
                                         pastWeeksNotIncluded = 3, thresholdMethod = "delta", alpha = 0.01)),
    ff_noufaily = ff(salmNewport, list(range = 400:528, b = 4, w = 3, noPeriods = 10, weightsThreshold = 2.58,
                                       pastWeeksNotIncluded = 26, thresholdMethod = "nbPlugin", alpha = 0.05)),
    ff_muan = ff(salmNewport, list(range = 450:528, b = 5, w = 2, noPeriods = 10, pastWeeksNotIncluded = 26,
                                   thresholdMethod = "muan", pThresholdTrend = 1)),
    ff_ha = ff(ha.sts, list(range = 170:290, b = 3, w = 2, noPeriods = 4, powertrans = "1/2")),
    ff_ha_none = ff(ha.sts, list(range = 170:290, b = 3, w = 3, reweight = FALSE, powertrans = "none", trend = FALSE)),
    cusum_rossi = cus(salmNewport, list(range = 300:528, trans = "rossi")),
    cusum_standard = cus(ha.sts, list(range = 105:290, trans = "standard", k = 0.5, h = 4))
  )
)
jsonlite::write_json(out, args[[1]], digits = NA, na = "null", auto_unbox = TRUE, matrix = "rowmajor")
