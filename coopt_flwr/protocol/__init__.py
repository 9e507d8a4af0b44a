"""The CoOpt protocol without Flower: message names and record keys, the mathematics
(projection, uniformity, alignment, inconsistency), evolution paths, screening, the merge
checks, a participant's steps, and an in-process replay of a round for the analyses."""
