"""Raw tables -> panel: layouts, periods, static encoding, labels (given or derived), ids,
selection and rejects, streaming, privacy, subscriber splits, and the synthetic world."""
