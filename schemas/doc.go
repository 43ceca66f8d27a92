// Package schemas holds the contracts every Updraft tier shares: the reading
// model and the NATS subject namespace. The wire format between edge and
// region lives in schemas/batch and the Parquet lake layout in schemas/lake.
package schemas
