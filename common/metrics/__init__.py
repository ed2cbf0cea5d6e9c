"""One definition of each metric the team reports (DESIGN.md §6), thin over scikit-learn / torchmetrics."""
