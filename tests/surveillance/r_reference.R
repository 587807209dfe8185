# Reference results of R's surveillance package for test_surveillance_r.py (base R only).
# Usage: Rscript r_reference.R OUT.csv
# Writes long rows: case, field, t (1-based row of the full series), s (column), value.
suppressMessages(library(surveillance))
args <- commandArgs(trailingOnly = TRUE)
data("salmNewport"); data("ha.sts")
rows <- list()
add <- function(case, field, range, m) {
  m <- as.matrix(m)
  rows[[length(rows) + 1]] <<- data.frame(case = case, field = field, t = rep(range, ncol(m)),
                                          s = rep(seq_len(ncol(m)), each = nrow(m)), value = as.numeric(m))
}
both <- function(case, res, range) {
  add(case, "upperbound", range, upperbound(res)); add(case, "alarm", range, alarms(res))
}
ff <- function(case, sts, ctl) {
  res <- farringtonFlexible(sts, control = c(ctl, list(glmWarnings = FALSE)))
  both(case, res, ctl$range)
  add(case, "expected", ctl$range, res@control$expected); add(case, "score", ctl$range, res@control$score)
}
ears <- function(case, sts, ctl) { res <- earsC(sts, control = ctl); both(case, res, res@control$range) }
cus <- function(case, sts, ctl) { res <- cusum(sts, control = ctl); both(case, res, ctl$range) }
salm3 <- salmNewport[, c(1, 6, 10)]
ha4 <- ha.sts[, 1:4]
add("data", "salm", seq_len(nrow(salmNewport)), observed(salmNewport))
add("data", "ha", seq_len(nrow(ha.sts)), observed(ha.sts))
add("data", "salm_epoch", seq_len(nrow(salmNewport)), salmNewport@epoch)
ears("ears_c1", salmNewport, list(method = "C1"))
ears("ears_c2", salmNewport, list(method = "C2"))
ears("ears_c3", salmNewport, list(method = "C3"))
ears("ears_c1_b10", salmNewport, list(method = "C1", baseline = 10, minSigma = 0.5, alpha = 0.01))
ears("ears_c3_ha", ha.sts, list(method = "C3", baseline = 5, minSigma = 1))
cus("cusum_rossi", salmNewport, list(range = 300:528, trans = "rossi"))
cus("cusum_standard", ha.sts, list(range = 105:290, trans = "standard", k = 0.5, h = 4))
ff("ff_default", salm3, list(range = 480:528))
ff("ff_farrington", salm3, list(range = 480:528, b = 5, w = 3, noPeriods = 1, weightsThreshold = 1,
                                pastWeeksNotIncluded = 3, thresholdMethod = "delta", alpha = 0.01))
ff("ff_noufaily", salm3, list(range = 480:528, b = 4, w = 3, noPeriods = 10, weightsThreshold = 2.58,
                              pastWeeksNotIncluded = 26, thresholdMethod = "nbPlugin", alpha = 0.05))
ff("ff_muan", salm3, list(range = 480:528, b = 5, w = 2, noPeriods = 10, pastWeeksNotIncluded = 26,
                          thresholdMethod = "muan", pThresholdTrend = 1))
ff("ff_ha", ha4, list(range = 240:290, b = 3, w = 2, noPeriods = 4, powertrans = "1/2"))
ff("ff_ha_none", ha4, list(range = 240:290, b = 3, w = 3, reweight = FALSE, powertrans = "none", trend = FALSE))
out <- do.call(rbind, rows)
write.csv(out, args[[1]], row.names = FALSE)
