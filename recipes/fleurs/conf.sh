# Nothing differs from run.sh's recipe settings (sets, feature configs); pass --corpus DIR.
