"""Ready inverse problems: each module has a forward simulator with a known truth and a
function that builds the inverse `Problem`."""
